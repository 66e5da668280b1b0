"""The master: pools agents' resources, offers them to frameworks, tracks every task."""

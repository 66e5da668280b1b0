"""Shared vocabulary of every component: ids, resources, messages, task states, clock, codec.

Imports nothing else of butte; stdlib and msgspec only."""

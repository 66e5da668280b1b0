"""Frameworks bundled with butte. Each talks to a master only through the public v1
scheduler API (`butte.client.scheduler`), exactly as third-party frameworks do, and keeps its
decisions in a pure planner beside a thin asyncio shell (docs/design.md)."""

"""``butte chronos``: a Chronos-compatible job scheduler (ISO8601 repeating schedules,
dependencies, retries) as a framework on the public scheduler API.

``schedule`` (ISO8601 arithmetic in IANA zones) and ``jobs`` (validation) feed ``core``, the
pure scheduling state machine; ``store`` keeps its state (SQLite or ZooKeeper); ``server`` is
the asyncio shell (master link, REST API, web page); ``main`` the command. See
docs/chronos.md.
"""

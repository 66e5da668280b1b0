"""Coordination: leader election, leader detection and the registry store.

`butte.coord.interface` defines the protocols and the registry operations; the
implementations are `butte.coord.zookeeper` (kazoo, a real ensemble) and
`butte.coord.standalone` (one master, SQLite registry). `butte.coord.detector` follows the
leader for agents and clients; `butte.coord.url` parses ``zk://`` URLs. `make_contender`
picks the implementation from the master's flags.
"""

from __future__ import annotations

import os

from butte.coord.interface import Contender


def make_contender(
    zk: str | None,
    work_dir: str,
    registry: str = "replicated_log",
    session_timeout: float = 10.0,
    connect_timeout: float | None = None,
) -> Contender:
    """The master's contender: ZooKeeper with ``--zk``, else the embedded standalone one. The
    registry is durable (ZooKeeper, or SQLite under ``work_dir``) unless ``registry`` is
    ``in_memory`` (or there is no work dir). Raises ValueError for a malformed ``zk``."""
    from butte.coord.standalone import MemoryRegistry, SqliteRegistry, StandaloneContender

    if zk:
        from butte.coord.url import parse_zk_url
        from butte.coord.zookeeper import ZooKeeperContender

        url = parse_zk_url(zk)
        timeout = connect_timeout if connect_timeout is not None else 2 * session_timeout
        contender = ZooKeeperContender(url, session_timeout, timeout)
        if registry == "in_memory":
            contender.registry = MemoryRegistry()
        return contender
    if registry == "in_memory" or not work_dir:
        return StandaloneContender(MemoryRegistry())
    return StandaloneContender(SqliteRegistry(os.path.abspath(work_dir)))

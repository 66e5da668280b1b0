"""``butte marathon``: a Marathon-compatible service scheduler (docs/marathon.md).

`planner` is the pure core (apps, groups, versions, deployments, instances, placement) and
`launch` its offer-to-TaskInfo part; `appdef` and `constraints` validate definitions; `api`
serves Marathon's REST API v2; `store` holds the SQLite and ZooKeeper stores; `main` is the
asyncio shell (scheduler client, leader election) and the CLI entry point.
"""

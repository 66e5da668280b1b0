"""``butte marathon``: a Marathon-compatible service scheduler (docs/marathon.md).

`planner` is the pure core (apps, groups, versions, deployments, instances, placement) and
`launch` its offer-to-TaskInfo part;
`appdef` and `constraints` validate definitions; `api` serves Marathon's REST API v2;
`store` is the embedded SQLite store; `main` is the asyncio shell and the CLI entry point.
"""

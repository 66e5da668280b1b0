"""``butte mpi``: MPI programs as gang-scheduled jobs (docs/mpi.md).

`gang` is the pure gang-scheduling planner; `job` its asyncio shell (a framework on
`butte.client.scheduler`); `rendezvous`, `launcher` and `proxy` start Open MPI's daemons in
node tasks instead of over ssh; `rankio` keeps every rank's output in its sandbox.
"""

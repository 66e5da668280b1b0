"""``butte vm``: a VM scheduler whose tasks are QEMU guests (docs/vm.md).

`planner` is the pure VM registry and placement; `server` its asyncio shell (framework on
`butte.client.scheduler`, REST API, state file); `executor` the custom executor that runs a
guest per task; `guest` what that executor decides (QEMU command line, end states); `cli`
the ``butte vm`` subcommands.
"""

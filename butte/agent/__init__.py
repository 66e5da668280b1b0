"""The butte agent (Mesos' slave): runs the tasks a master sends it. See README.md here.

Kept import-free: the built-in executor process imports `butte.agent.executor` and must not
pay for the agent's own dependencies."""

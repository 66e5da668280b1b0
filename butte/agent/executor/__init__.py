"""Executors the agent ships: `command` (command tasks and task groups) and `zygote`, the fork
server that starts it cheaply. Import-free so the executor process starts fast."""

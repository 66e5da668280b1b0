"""Simulated agents: `butte sim` and the benchmarks drive a real master with thousands of
agents that speak the real protocol but start no processes (see `butte.sim.agents`)."""

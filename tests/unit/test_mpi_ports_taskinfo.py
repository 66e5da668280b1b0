"""The node task ``butte mpi`` launches takes its ports from its offers and hands them to
Open MPI's daemon and ranks, or MPICH's ranks, through their environment; offers are read
with their ports."""

from __future__ import annotations

import argparse
import socket

import pytest

from butte.core.resources import Resources
from butte.frameworks.mpi import cli, gang
from butte.frameworks.mpi.job import MpiJob, MpiSpec, offer_view
from butte.frameworks.mpi.ports import PORTS, mpich_port_env, openmpi_port_env, port_free
from butte.frameworks.mpi.proxy import port_env
from butte.frameworks.mpi.rendezvous import Rendezvous


def spec(impl: str) -> MpiSpec:
    node, rank = PORTS[impl]
    g = gang.GangSpec(
        ranks=2, rank_resources=Resources.scalars(cpus=1, mem=128), node_ports=node, rank_ports=rank
    )
    return MpiSpec("127.0.0.1:1", ("prog",), g, impl=impl, advertise_ip="127.0.0.1")


def launched(impl: str, ports: tuple[int, ...]) -> dict:
    job = MpiJob(spec(impl), info=lambda line: None)
    job.rendezvous = Rendezvous(["node0"])
    node = gang.Node(0, "a1", "h1", 2, ("o1",), ports)
    operation = job._launch_operation("t1", node, "*")
    (task,) = operation["launch"]["task_infos"]
    return task


def env_of(task: dict) -> dict[str, str]:
    return {v["name"]: v["value"] for v in task["command"]["environment"]["variables"]}


def test_openmpi_node_task_takes_its_run_of_ports_and_hands_it_to_its_proxy() -> None:
    # 3 for orted, and room for twice the 2 ranks' two listeners.
    assert PORTS["openmpi"] == (3, 4)
    task = launched("openmpi", tuple(range(28000, 28011)))
    ports = [r for r in task["resources"] if r["name"] == "ports"]
    assert ports[0]["ranges"]["range"] == [{"begin": 28000, "end": 28010}]
    env = env_of(task)
    assert env["BUTTE_MPI_PORTS"] == ",".join(str(p) for p in range(28000, 28011))
    assert env["BUTTE_MPI_IMPL"] == "openmpi"
    # The proxy turns them into Open MPI's variables on the agent.
    chosen = port_env(env)
    assert chosen["OMPI_MCA_btl_tcp_port_min_v4"] == "28000"
    assert chosen["OMPI_MCA_btl_tcp_port_range_v4"] == "11"


def test_orted_takes_the_first_free_ports_of_the_run_and_the_ranks_the_whole_run() -> None:
    run = list(range(28000, 28011))
    busy = {28000, 28002}  # listened on, or in TIME_WAIT
    env = openmpi_port_env(run, lambda port: port not in busy)
    assert env == {
        "OMPI_MCA_oob_tcp_dynamic_ipv4_ports": "28001",
        "OMPI_MCA_oob_tcp_dynamic_ipv6_ports": "28003",
        "PMIX_MCA_ptl_tcp_ipv4_port": "28004",
        "OMPI_MCA_btl_tcp_port_min_v4": "28000",
        "OMPI_MCA_btl_tcp_port_range_v4": "11",
        "OMPI_MCA_btl_tcp_port_min_v6": "28000",
        "OMPI_MCA_btl_tcp_port_range_v6": "11",
    }
    # Fewer than three free: the run's first (orted then says it cannot bind).
    assert openmpi_port_env(run, lambda port: False)["PMIX_MCA_ptl_tcp_ipv4_port"] == "28002"
    for bad in ([28000, 28001], [28000, 28002, 28003]):
        with pytest.raises(ValueError):
            openmpi_port_env(bad)


def test_port_free_sees_a_listener_and_a_lingering_connection() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_free(port)
    # The accepting side closes first: its end stays in TIME_WAIT on the port.
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    server.close()
    accepted.close()
    client.recv(1)
    client.close()
    assert not port_free(port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused = probe.getsockname()[1]
    assert port_free(unused)


def test_a_node_without_ports_takes_none() -> None:
    task = launched("mpich", ())
    assert not [r for r in task["resources"] if r["name"] == "ports"]
    env = env_of(task)
    assert not [k for k in env if k.startswith(("OMPI_", "PMIX_", "BUTTE_MPI_PORTS"))]
    assert port_env(env) == {}
    # Ports for an implementation butte cannot keep on them are refused, not ignored.
    with pytest.raises(ValueError, match="BUTTE_MPI_IMPL='lam'"):
        port_env({"BUTTE_MPI_PORTS": "28000,28001,28002", "BUTTE_MPI_IMPL": "lam"})


def test_mpich_node_task_takes_two_ports_per_rank_for_its_ranks_network_modules() -> None:
    # hydra's proxy listens on none; each rank's network module gets the whole run.
    task = launched("mpich", tuple(range(28000, 28004)))
    ports = [r for r in task["resources"] if r["name"] == "ports"]
    assert ports[0]["ranges"]["range"] == [{"begin": 28000, "end": 28003}]
    env = env_of(task)
    assert env["BUTTE_MPI_PORTS"] == "28000,28001,28002,28003"
    assert env["BUTTE_MPI_IMPL"] == "mpich"
    assert port_env(env) == {
        "UCX_TCP_PORT_RANGE": "28000-28003",
        "FI_TCP_PORT_LOW_RANGE": "28000",
        "FI_TCP_PORT_HIGH_RANGE": "28003",
        "MPIR_CVAR_CH3_PORT_RANGE": "28000:28003",
    }
    assert mpich_port_env([28000, 28001]) == mpich_port_env((28000, 28001))
    for bad in ([28000], [28000, 28002], []):
        with pytest.raises(ValueError):
            mpich_port_env(bad)


def test_an_agent_holds_as_many_mpich_ranks_as_its_run_of_ports_has_room_for() -> None:
    node, rank = PORTS["mpich"]
    resources = Resources.scalars(cpus=8, mem=4096) + Resources.from_json(
        [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 5}]}}]
    )
    assert gang.agent_slots(resources, Resources.scalars(cpus=1), None, node, rank) == 2
    assert gang.node_ports(
        resources,
        gang.GangSpec(2, Resources.scalars(cpus=1), node_ports=node, rank_ports=rank).ports_needed(
            2
        ),
    ) == (1, 2, 3, 4)


def test_offers_are_read_with_their_unreserved_ports() -> None:
    raw = {
        "id": {"value": "o1"},
        "agent_id": {"value": "a1"},
        "hostname": "h1",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": 28000, "end": 28009}]},
            },
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": 28050, "end": 28059}]},
                "reservations": [{"type": "STATIC", "role": "dev"}],
            },
        ],
    }
    view = offer_view(raw)
    assert view.resources.scalar("cpus") == 2
    assert view.resources.ranges("ports") == ((28000, 28009),)


def test_the_cli_asks_ports_for_open_mpi_and_mpich() -> None:
    parser = argparse.ArgumentParser()
    cli.add_flags(parser)
    for impl, wanted in (("openmpi", (3, 4)), ("mpich", (0, 2))):
        args = parser.parse_args(["--master", "m:1", "-np", "2", "--impl", impl, "--", "prog"])
        g = cli.spec_from_args(args).gang
        assert (g.node_ports, g.rank_ports) == wanted

"""Which offered port each listening MPI process of a node task takes (docs/mpi.md, "Ports").

A node task takes one contiguous run of its offers' ports (`PORTS`: so many for the node, so
many per rank). ``butte mpi`` puts the run in the task's environment (``BUTTE_MPI_PORTS``)
and the node task's proxy, on the agent, hands it out just before it starts the MPI daemon
(`openmpi_port_env`): Open MPI's ``orted`` gets the first three ports of the run that are
free at that moment (`port_free`), and each rank's TCP transport binds the first free port
of the whole run, skipping those. A port is not free when something listens on it or when
connections of an earlier task are still in TIME_WAIT on it: Open MPI's TCP transport binds
without SO_REUSEADDR, so an earlier job's ports stay closed to every bind for a minute,
which is also why the run has room for twice the listeners a node has.

MPICH (`mpich_port_env`): hydra's proxy (``hydra_pmi_proxy``) listens on no port (it talks
PMI to its ranks over socket pairs and connects out to ``mpiexec``), so the node takes none
for itself; each rank listens where its network module says, and every module's port range
is set to the whole run: UCX's TCP transport (``ch4:ucx``, Debian's build) picks a random
port of ``UCX_TCP_PORT_RANGE`` and another while the one it picked is busy, libfabric's tcp
provider (``ch4:ofi``) binds within ``FI_TCP_PORT_LOW_RANGE``..``FI_TCP_PORT_HIGH_RANGE``,
and ``ch3``'s sockets (and MPICH's own listeners) within ``MPIR_CVAR_CH3_PORT_RANGE``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence

# The ports a node task takes from its offers, (for itself, per rank), by MPI implementation.
# Open MPI 4's orted listens on three (its out-of-band channel on IPv4 and on IPv6, and its
# PMIx server) and each rank's TCP transport on one IPv4 and one IPv6 port: the run has
# twice as many. MPICH's hydra proxy listens on none; each rank's network module listens on one
# port per network interface (each bound to that interface's address, so one port number
# can serve every interface): the run has room for twice one per rank (docs/mpi.md, "Ports").
PORTS = {"openmpi": (3, 4), "mpich": (0, 2)}


def port_free(port: int) -> bool:
    """Whether ``port`` can be bound now on every IPv4 (and IPv6) address by a socket
    without SO_REUSEADDR: nothing listens on it and no connection lingers on it."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host: nothing can listen there either
        with sock:
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _check_run(ports: Sequence[int], least: int) -> None:
    """Raises ValueError unless ``ports`` are at least ``least`` consecutive ports."""
    if len(ports) < least or list(ports) != list(range(ports[0], ports[0] + len(ports))):
        raise ValueError(f"not a run of at least {least} ports: {list(ports)}")


def openmpi_port_env(
    ports: Sequence[int], free: Callable[[int], bool] = port_free
) -> dict[str, str]:
    """The environment that makes a node's ``orted`` and its ranks listen on ports of the
    run ``ports`` (read by Open MPI and PMIx at startup): ``orted``'s three listeners on
    the first ports ``free`` accepts (the run's first ones where fewer are free: ``orted``
    then says it cannot bind), the ranks' TCP transport anywhere in the run."""
    _check_run(ports, 3)
    usable = [p for p in ports if free(p)]
    daemon = usable[:3] if len(usable) >= 3 else list(ports[:3])
    first, count = str(ports[0]), str(len(ports))
    return {
        "OMPI_MCA_oob_tcp_dynamic_ipv4_ports": str(daemon[0]),
        "OMPI_MCA_oob_tcp_dynamic_ipv6_ports": str(daemon[1]),
        "PMIX_MCA_ptl_tcp_ipv4_port": str(daemon[2]),
        # Each rank binds the first free port of [min, min + range): orted's are taken.
        "OMPI_MCA_btl_tcp_port_min_v4": first,
        "OMPI_MCA_btl_tcp_port_range_v4": count,
        "OMPI_MCA_btl_tcp_port_min_v6": first,
        "OMPI_MCA_btl_tcp_port_range_v6": count,
    }


def mpich_port_env(ports: Sequence[int]) -> dict[str, str]:
    """The environment that makes a node's MPICH ranks listen on ports of the run ``ports``
    (hydra's proxy passes its environment on to the ranks): the whole run as the port range
    of each of MPICH's network modules (see the module docstring). The modules step around
    busy ports themselves, so none is chosen here."""
    _check_run(ports, 2)  # one port only: UCX would not look for another when it is busy
    first, last = str(ports[0]), str(ports[-1])
    return {
        "UCX_TCP_PORT_RANGE": f"{first}-{last}",
        "FI_TCP_PORT_LOW_RANGE": first,
        "FI_TCP_PORT_HIGH_RANGE": last,
        "MPIR_CVAR_CH3_PORT_RANGE": f"{first}:{last}",
    }

# MPI gang job tests (tests/integration/test_mpi_framework.py): Open MPI, MPICH and mpi4py.
# (Debian keeps Open MPI as the default mpirun when both are installed.)
command -v mpirun >/dev/null 2>&1 && command -v orted >/dev/null 2>&1 \
    || apt_install openmpi-bin libopenmpi-dev \
    || log "warning: could not install openmpi-bin; the MPI tests cannot run"
command -v mpiexec.hydra >/dev/null 2>&1 \
    || apt_install mpich \
    || log "warning: could not install mpich; the MPICH tests cannot run"
"$VPY" -c 'import mpi4py' >/dev/null 2>&1 \
    || quiet "${PIP[@]}" install "mpi4py==4.1.2"

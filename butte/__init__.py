"""butte: a cluster resource manager in the shape of Apache Mesos, speaking the Mesos v1 HTTP
APIs in JSON."""

__version__ = "0.1.0"
# The number reported on /version: Mesos clients (pymesos) parse it with int() per part and
# enable GPU support for >= 1.0.0, so it names the Mesos API level we speak, digits only.
MESOS_COMPAT_VERSION = "1.11.0"

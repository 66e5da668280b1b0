"""Client libraries for Python frameworks that talk to a butte (or Mesos) master over HTTP."""

from butte.client.scheduler import (
    CallError,
    MasterUnreachable,
    SchedulerClient,
    SchedulerError,
    SubscriptionError,
)

__all__ = [
    "CallError",
    "MasterUnreachable",
    "SchedulerClient",
    "SchedulerError",
    "SubscriptionError",
]

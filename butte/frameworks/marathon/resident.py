"""Resident apps' reservations as Mesos operations (pure): what Marathon's
``InstanceOpFactoryImpl`` and ``OfferMatcherReconciler`` put into an ACCEPT for an app with
local persistent volumes (docs/marathon.md "Stateful apps").

An instance of a resident app first reserves its resources (cpus, mem, disk, gpus, ports) on
one agent for the app's role and creates its volumes there (RESERVE and CREATE, one ACCEPT);
every task of that instance is then launched on exactly those resources when the agent's
offer carries them again. Both are labelled as Marathon labels them
(``marathon_framework_id``, ``marathon_task_id``: the instance id), which is how an offer's
reserved resources are told apart; resources so labelled for an instance that is gone or
decommissioned are freed (DESTROY and UNRESERVE).

Resources are in the pre-refinement form (``role``, ``reservation``) a framework without
RESERVATION_REFINEMENT is offered (docs/protocol.md §1.6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FRAMEWORK_LABEL = "marathon_framework_id"
TASK_LABEL = "marathon_task_id"


def labels(framework_id: str, reservation_id: str) -> dict[str, Any]:
    """The Mesos Labels of an instance's reservation."""
    return {
        "labels": [
            {"key": FRAMEWORK_LABEL, "value": framework_id},
            {"key": TASK_LABEL, "value": reservation_id},
        ]
    }


def _reservation_labels(resource: Mapping[str, Any]) -> dict[str, str]:
    stack = resource.get("reservations")
    resv = stack[-1] if isinstance(stack, list) and stack else resource.get("reservation")
    if not isinstance(resv, Mapping):
        return {}
    raw = (resv.get("labels") or {}).get("labels") or []
    return {str(lb.get("key")): str(lb.get("value", "")) for lb in raw if isinstance(lb, Mapping)}


def is_plain(resource: Mapping[str, Any]) -> bool:
    """Whether an offered resource may be taken as it is by a task that reserves nothing:
    not a labelled (dynamic, someone's) reservation, not a persistent volume, no disk but
    the root disk (a MOUNT disk is taken whole or not at all)."""
    return not _reservation_labels(resource) and resource.get("disk") is None


def is_source_disk(resource: Mapping[str, Any]) -> bool:
    """Whether an offered resource is an unreserved PATH or MOUNT disk holding no volume:
    where a stateful app's ``path`` or ``mount`` volume may be made."""
    disk = resource.get("disk")
    if resource.get("name") != "disk" or not isinstance(disk, Mapping):
        return False
    source = disk.get("source") or {}
    unreserved = resource.get("role", "*") == "*" and not resource.get("reservations")
    return (
        unreserved
        and "persistence" not in disk
        and isinstance(source, Mapping)
        and source.get("type") in ("PATH", "MOUNT")
    )


def offered(offer: Mapping[str, Any], framework_id: str | None) -> dict[str, list[dict]]:
    """The offer's resources reserved by this framework, by reservation (instance) id."""
    out: dict[str, list[dict[str, Any]]] = {}
    if framework_id is None:
        return out
    for r in offer.get("resources", ()):
        found = _reservation_labels(r)
        if found.get(FRAMEWORK_LABEL) == framework_id and TASK_LABEL in found:
            out.setdefault(found[TASK_LABEL], []).append(r)
    return out


def persistence_id(app_id: str, container_path: str, unique: str) -> str:
    """Marathon's LocalVolumeId: ``<app id as a safe path>#<container path>#<unique>``."""
    return f"{app_id.strip('/').replace('/', '_')}#{container_path}#{unique}"


def reserve_and_create(
    role: str,
    resv_labels: Mapping[str, Any],
    taken: Iterable[Mapping[str, Any]],
    volumes: Iterable[tuple[str, float, str, Mapping[str, Any] | None]],
) -> list[dict[str, Any]]:
    """The RESERVE of ``taken`` (unreserved resources of an offer: the root disk with the
    root volumes' sizes, and the PATH or MOUNT disks of the others) for ``role`` with
    ``resv_labels``, then the CREATE of each volume (container path, size in MiB,
    persistence id, its disk's source or None for the root disk) out of the reserved
    disk."""
    reservation = {"labels": dict(resv_labels)}
    reserved = []
    for r in taken:
        out = {k: v for k, v in r.items() if k not in ("reservations", "reservation", "role")}
        reserved.append({**out, "role": role, "reservation": reservation})
    created = []
    for path, size, pid, source in volumes:
        disk: dict[str, Any] = {
            "persistence": {"id": pid},
            "volume": {"container_path": path, "mode": "RW"},
        }
        if source is not None:
            disk["source"] = dict(source)
        created.append(
            {
                "name": "disk",
                "type": "SCALAR",
                "scalar": {"value": size},
                "role": role,
                "reservation": reservation,
                "disk": disk,
                **_allocation(reserved),
            }
        )
    ops: list[dict[str, Any]] = [{"type": "RESERVE", "reserve": {"resources": reserved}}]
    if created:
        ops.append({"type": "CREATE", "create": {"volumes": created}})
    return ops


def _allocation(resources: list[dict[str, Any]]) -> dict[str, Any]:
    info = next((r["allocation_info"] for r in resources if "allocation_info" in r), None)
    return {"allocation_info": info} if info is not None else {}


def destroy_and_unreserve(resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Frees an instance's offered reservation: DESTROY its volumes, then UNRESERVE it all
    (a destroyed volume is reserved disk again, of its PATH or MOUNT source if it had one)."""
    resources = list(resources)
    volumes = [dict(r) for r in resources if (r.get("disk") or {}).get("persistence")]
    plain = []
    for r in resources:
        out = {k: v for k, v in r.items() if k != "disk"}
        source = (r.get("disk") or {}).get("source")
        if source is not None:
            out["disk"] = {"source": source}
        plain.append(out)
    ops: list[dict[str, Any]] = []
    if volumes:
        ops.append({"type": "DESTROY", "destroy": {"volumes": volumes}})
    ops.append({"type": "UNRESERVE", "unreserve": {"resources": plain}})
    return ops

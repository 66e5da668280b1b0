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

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from butte.frameworks.marathon.model import Reservation, safe_id

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
    if "reservations" not in resource and "reservation" not in resource:
        return {}  # most of an offer: unreserved or statically reserved (a hot path)
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
    return resource.get("disk") is None and not _reservation_labels(resource)


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
    return f"{safe_id(app_id)}#{container_path}#{unique}"


Picks = list[tuple[int, float, dict[str, Any]]]  # `launch.Pool.take_sources`
# (container path or pod volume name, size in MiB, persistence id, PATH/MOUNT source or None)
Volume = tuple[str, float, str, Mapping[str, Any] | None]


def split_volumes(infos: Iterable[Mapping[str, Any]]) -> tuple[float, list[Mapping[str, Any]]]:
    """Of persistent volumes' ``persistent`` infos: the MiB the ``root`` ones take of the
    work disk, and the ``path`` and ``mount`` ones (each needs a disk of its kind)."""
    infos = list(infos)
    on_root = sum(i["size"] for i in infos if i["type"] == "root")
    return on_root, [i for i in infos if i["type"] != "root"]


def volumes_made(
    spec_id: str, named: Iterable[tuple[str, Mapping[str, Any]]], picks: Picks, unique: str
) -> list[Volume]:
    """Each persistent volume (name, ``persistent`` info) as it is created, in the
    definition's order: the root ones of their size, the others of the disk picked for them
    (in `split_volumes`' order)."""
    sources = iter(picks)
    out: list[Volume] = []
    for name, info in named:
        pid = persistence_id(spec_id, name, unique)
        if info["type"] == "root":
            out.append((name, info["size"], pid, None))
        else:
            _, amount, disk = next(sources)
            out.append((name, amount, pid, disk["disk"]["source"]))
    return out


def reserve_and_create(
    role: str,
    resv_labels: Mapping[str, Any],
    taken: Iterable[Mapping[str, Any]],
    volumes: Iterable[Volume],
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


class Reservations:
    """Every resident instance's reservation, apps' and pods' (their ids share one
    namespace), shared by the planner and the pod manager: by id and by run spec, which
    changed since the last store (`take_dirty`), and which are to be freed once an offer
    brings them (`to_free`: offers are wanted until then)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Reservation] = {}
        self._by_spec: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self.to_free: set[str] = set()

    def get(self, rid: str | None) -> Reservation | None:
        return self.by_id.get(rid) if rid else None

    def of(self, spec_id: str) -> list[Reservation]:
        """A run spec's reservations (decommissioned ones too)."""
        return [self.by_id[r] for r in self._by_spec.get(spec_id, ())]

    def restore(self, record: dict[str, Any]) -> None:
        res = Reservation.from_record(record)
        self._index(res)
        if res.decommissioned:
            self.to_free.add(res.id)

    def add(self, res: Reservation) -> None:
        self._index(res)
        self.changed(res)

    def _index(self, res: Reservation) -> None:
        self.by_id[res.id] = res
        self._by_spec.setdefault(res.app_id, set()).add(res.id)

    def drop(self, res: Reservation) -> None:
        self.by_id.pop(res.id, None)
        ids = self._by_spec.get(res.app_id)
        if ids is not None:
            ids.discard(res.id)
            if not ids:
                del self._by_spec[res.app_id]
        self._dirty.add(res.id)

    def changed(self, res: Reservation) -> None:
        self._dirty.add(res.id)

    def take_dirty(self) -> list[tuple[str, str, Any]]:
        """The changed records as the store takes them (None: deleted)."""
        out = []
        for rid in sorted(self._dirty):
            res = self.by_id.get(rid)
            out.append(("reservation", rid, res.record() if res is not None else None))
        self._dirty.clear()
        return out

    def decommission(self, res: Reservation) -> None:
        """The reservation goes: freed once nothing runs on it and an offer brings it."""
        if not res.decommissioned:
            res.decommissioned = True
            self.changed(res)
            self.to_free.add(res.id)

    def idle_offered(
        self, labelled: Mapping[str, list[dict[str, Any]]], spec_id: str
    ) -> Iterator[tuple[Reservation, list[dict[str, Any]]]]:
        """The run spec's reservations that an offer carries (`offered`) and that run
        nothing and are not decommissioned: where its next launches go, with the offered
        resources of each."""
        for rid, resources in labelled.items():
            res = self.by_id.get(rid)
            if res is not None and res.app_id == spec_id and not res.decommissioned:
                if not res.task_id:
                    yield res, resources

    def launched_on(self, res: Reservation, runner: str) -> None:
        """``runner`` (a task id, or a pod instance's id) was launched on the reservation."""
        res.task_id = runner
        self.changed(res)

    def ended(self, res: Reservation | None, task_id: str) -> None:
        """What ran on it (a task id, or a pod instance's id) has ended."""
        if res is not None and res.task_id == task_id:
            res.task_id = None
            self.changed(res)

    def gone_with_agent(self, res: Reservation | None, state: str) -> None:
        """A task of the instance ended with ``state``: TASK_GONE_BY_OPERATOR says its agent
        was marked gone, and its reservation and volumes went with it, so the record goes
        (nothing to free) and the instance reserves anew elsewhere."""
        if res is not None and state == "TASK_GONE_BY_OPERATOR":
            self.drop(res)

    def spare(self, spec_id: str, busy: Callable[[str], bool]) -> int:
        """A run spec's reservations that run nothing, or something not ``busy`` (being
        killed): what its wanted launches take before any new reservation is made."""
        return sum(
            1
            for res in self.of(spec_id)
            if not res.decommissioned and (not res.task_id or not busy(res.task_id))
        )

    def freeing(self, labelled: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """DESTROY and UNRESERVE of the offered reservations of instances that are gone or
        decommissioned and run nothing (Marathon's OfferMatcherReconciler); their records
        go with them."""
        ops: list[dict[str, Any]] = []
        for rid, resources in labelled.items():
            res = self.by_id.get(rid)
            if res is not None and (not res.decommissioned or res.task_id is not None):
                continue
            ops += destroy_and_unreserve(resources)
            self.to_free.discard(rid)
            if res is not None:
                self.drop(res)
        return ops

    def timeouts(self, now: float, timeout: float) -> set[str]:
        """Gives up new reservations that no offer brought back within ``timeout`` seconds
        (Marathon's ``ReservationTimeout``): each record goes, so that its instance reserves
        anew, and what was reserved is freed when an offer shows it. Returns the run specs
        touched."""
        touched = set()
        for res in list(self.by_id.values()):
            if res.attempt or res.decommissioned or res.task_id:  # launched on, or going
                continue
            if now - res.created_at > timeout:
                self.drop(res)
                self.to_free.add(res.id)
                touched.add(res.app_id)
        return touched

"""Offer operations of the master core: RESERVE, UNRESERVE, CREATE, DESTROY, GROW_VOLUME and
SHRINK_VOLUME, from a framework's ACCEPT or from an operator; operation feedback
(UPDATE_OPERATION_STATUS, ACKNOWLEDGE_OPERATION_STATUS, RECONCILE_OPERATIONS, GET_OPERATIONS).

A mixin of `MasterMachine` (same records; effects collected for the event being handled).
The conversions themselves are pure (`butte.core.resource_ops`); here they are checked
against ACLs, principals and what runs on the agent, then applied everywhere at once: the
offer's pool (so later operations and LAUNCHes of the same ACCEPT see the result), the
allocator, the agent's total, the registry's agent record (so a new leader knows it) and
the agent (`internal.CheckpointResources`: it checkpoints its new total and creates or
removes volume directories).
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import msgspec

from butte.coord.interface import AdmitAgent
from butte.core import internal, resource_ops, task_states
from butte.core.messages import Operation
from butte.core.resource_ops import Conversion, OperationError
from butte.core.resources import Resources
from butte.master import operation_feedback, views
from butte.master.core import MasterCore
from butte.master.state import Agent, Framework, OperationRecord

log = logging.getLogger(__name__)

FINISHED = "OPERATION_FINISHED"
ERROR = "OPERATION_ERROR"
DROPPED = "OPERATION_DROPPED"
TERMINAL = frozenset({FINISHED, ERROR, DROPPED, "OPERATION_FAILED"})

# The ACL action guarding each operation, and what its object is.
ACL_ACTIONS = {
    "RESERVE": "reserve_resources",
    "UNRESERVE": "unreserve_resources",
    "CREATE": "create_volumes",
    "DESTROY": "destroy_volumes",
    "GROW_VOLUME": "resize_volume",
    "SHRINK_VOLUME": "resize_volume",
}
# Both spellings of the resize action are honoured (either may hold the rules).
_ALSO = {"resize_volume": "resize_volumes"}

# Operation payload field of each operation type in Offer.Operation JSON.
PAYLOADS = {
    "RESERVE": "reserve",
    "UNRESERVE": "unreserve",
    "CREATE": "create",
    "DESTROY": "destroy",
    "GROW_VOLUME": "grow_volume",
    "SHRINK_VOLUME": "shrink_volume",
    "CREATE_DISK": "create_disk",
    "DESTROY_DISK": "destroy_disk",
}


class OperatorRefusal(Exception):
    """An operator's operation refused: HTTP ``status`` and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def payload_of(op: Operation) -> dict[str, Any] | None:
    return getattr(op, PAYLOADS.get(op.type, ""), None)


class OperationEvents(MasterCore):
    """Offer operations and their feedback (see the module docstring)."""

    __slots__ = ()

    # -- checks shared by frameworks and operators --------------------------------------------

    def _authorize(self, conversion: Conversion, principal: str | None) -> None:
        """The ACL of the operation, for each reservation or volume it touches."""
        action = ACL_ACTIONS[conversion.kind]
        subjects = conversion.converted if conversion.kind == "RESERVE" else conversion.consumed
        if conversion.kind == "CREATE":
            subjects = conversion.converted
        for (_, stack, disk), _ in subjects.items():
            if conversion.kind == "UNRESERVE":
                obj = stack[-1].principal if stack else None
            elif conversion.kind == "DESTROY":
                obj = disk.principal if disk is not None else None
            else:
                obj = stack[-1].role if stack else "*"
            allowed = self.options.acls.allowed(action, principal, obj)
            if action in _ALSO:
                allowed = allowed and self.options.acls.allowed(_ALSO[action], principal, obj)
            if not allowed:
                who = principal or "an unauthenticated principal"
                raise OperationError(
                    f"Not authorized: {who} may not {conversion.kind} ({action} {obj!r})"
                )

    def _check_agent_side(self, agent: Agent, conversion: Conversion) -> None:
        """What only the agent's state decides: persistence ids already taken, volumes a
        live task or executor uses."""
        resource_ops.check_new_volumes(agent.total, conversion)
        if conversion.kind not in ("DESTROY", "GROW_VOLUME", "SHRINK_VOLUME"):
            return
        for pid in sorted(p for _, p in resource_ops.persistence_ids(conversion.consumed)):
            if pid in self._volumes_in_use(agent):
                raise OperationError(
                    f"{conversion.kind}: volume '{pid}' is in use by a task or executor"
                )

    def _volumes_in_use(self, agent: Agent) -> set[str]:
        used: set[str] = set()
        for fid, tid in agent.tasks:
            fw = self.frameworks.get(fid)
            task = fw.tasks.get(tid) if fw is not None else None
            if task is not None and not task_states.is_terminal(task.state):
                used |= {p for _, p in resource_ops.persistence_ids(task.resources)}
        for ex in agent.executors.values():
            used |= {p for _, p in resource_ops.persistence_ids(ex.resources)}
        return used

    def _apply_to_agent(self, agent: Agent, conversion: Conversion) -> None:
        """The agent's total after ``conversion``: recorded, made durable in the registry's
        agent record, and sent to the agent to checkpoint."""
        agent.total = agent.total - conversion.consumed + conversion.converted
        total_json = agent.total.to_json("post")
        agent.info = msgspec.structs.replace(agent.info, resources=total_json)
        self._registry_write(AdmitAgent(agent.agent_id, msgspec.to_builtins(agent.info)))
        self._send_agent(agent, internal.CheckpointResources(resources=total_json))
        self._count("operations_" + conversion.kind.lower())

    # -- from a framework's ACCEPT ------------------------------------------------------------

    def _offer_operation(
        self,
        fw: Framework,
        agent: Agent,
        op: Operation,
        pools: dict[str, Resources],
        now: float,
    ) -> None:
        """One RESERVE/UNRESERVE/CREATE/DESTROY/GROW_VOLUME/SHRINK_VOLUME of an ACCEPT.
        On any problem nothing changes and the operation gets OPERATION_ERROR."""
        payload = payload_of(op)
        try:
            conversion = resource_ops.parse_operation(op.type, payload, fw.info.principal)
            refined = any(len(k[1]) > 1 for k, _ in conversion.converted.items())
            if refined and not fw.info.has_capability("RESERVATION_REFINEMENT"):
                raise OperationError(
                    f"{op.type}: a refined reservation needs the RESERVATION_REFINEMENT capability"
                )
            self._authorize(conversion, fw.info.principal)
            role = _pool_role(pools, conversion, payload)
            if conversion.kind == "RESERVE":
                _check_reservation_roles(conversion, role, fw.roles)
            pool = resource_ops.apply(pools[role], conversion)
            self._check_agent_side(agent, conversion)
        except OperationError as e:
            self._count("invalid_operations")
            self._operation_status(fw, op, agent.agent_id, ERROR, str(e), None, now)
            return
        except Exception as e:  # a bug in validation must not leave the call half applied
            log.exception("Framework %s: validating a %s failed", fw.framework_id, op.type)
            message = f"Operation could not be validated: {e!r}"
            self._operation_status(fw, op, agent.agent_id, ERROR, message, None, now)
            return
        pools[role] = pool
        self.allocator.convert_allocation(
            fw.framework_id, agent.agent_id, role, conversion.consumed, conversion.converted
        )
        self._apply_to_agent(agent, conversion)
        self._count_for(fw, "operations/" + op.type.lower())
        self._operation_status(fw, op, agent.agent_id, FINISHED, "", conversion.converted, now)
        if op.id is not None:  # the agent keeps it until acknowledged (operation_feedback)
            operation_feedback.send_to_agent(self, agent, fw, fw.operations[op.id.value])

    def _operation_status(
        self,
        fw: Framework,
        op: Operation,
        agent_id: str | None,
        state: str,
        message: str,
        converted: Resources | None,
        now: float,
    ) -> None:
        """UPDATE_OPERATION_STATUS for an operation with an id (none without: Mesos sends
        feedback only to frameworks that ask for it by naming the operation)."""
        if op.id is None:
            return
        status: dict[str, Any] = {"operation_id": {"value": op.id.value}, "state": state}
        if message:
            status["message"] = message
        if agent_id is not None:
            status["agent_id"] = views.value(agent_id)
        if converted is not None:
            status["converted_resources"] = converted.to_json("post")
        status_uuid = base64.b64encode(uuid.uuid4().bytes).decode()
        status["uuid"] = {"value": status_uuid}
        record = OperationRecord(
            op.id.value, fw.framework_id, agent_id, msgspec.to_builtins(op), [status], status_uuid
        )
        fw.operations[op.id.value] = record
        self._send_framework(
            fw, {"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {"status": status}}
        )

    def _resend_operation_statuses(self, fw: Framework) -> None:
        """A re-subscribed framework hears again every operation status it has not
        acknowledged (it may have missed them while its stream was down)."""
        for record in fw.operations.values():
            if record.unacknowledged is not None:
                self._send_framework(
                    fw,
                    {
                        "type": "UPDATE_OPERATION_STATUS",
                        "update_operation_status": {"status": record.statuses[-1]},
                    },
                )

    # -- ACKNOWLEDGE_OPERATION_STATUS, RECONCILE_OPERATIONS -------------------------------------

    def _acknowledge_operation(self, fw: Framework, ack: dict[str, Any]) -> str | None:
        """Why the acknowledgement is malformed, or None. An acknowledged terminal status
        ends the operation's record (Mesos forgets it then too)."""
        op_id = _value(ack.get("operation_id"))
        raw_uuid = ack.get("uuid")  # bytes (base64) in the v1 API; pymesos echoes {value}
        status_uuid = raw_uuid if isinstance(raw_uuid, str) and raw_uuid else _value(raw_uuid)
        if op_id is None or status_uuid is None:
            return "'acknowledge_operation_status' needs 'operation_id' and 'uuid'"
        if ack.get("resource_provider_id") is not None:
            return "No resource provider is known to this master"
        record = fw.operations.get(op_id)
        if record is None or record.unacknowledged != status_uuid:
            return None  # a stale or repeated acknowledgement is harmless
        record.unacknowledged = None
        operation_feedback.acknowledged(self, record, status_uuid)
        if record.statuses[-1]["state"] in TERMINAL:
            del fw.operations[op_id]
        return None

    def _reconcile_operations(
        self, fw: Framework, payload: dict[str, Any], now: float
    ) -> str | None:
        """Answers the latest state of each operation named (every known one when none is):
        without uuid, as Mesos answers reconciliation; for one it does not know,
        OPERATION_RECOVERING, _UNREACHABLE, _GONE_BY_OPERATOR or _UNKNOWN by the state of the
        agent named (`operation_feedback.unknown_state`)."""
        wanted = payload.get("operations") or []
        if not isinstance(wanted, list):
            return "'reconcile_operations.operations' must be a list"
        ids: list[tuple[str, str | None]] = []
        for item in wanted:
            op_id = _value(item.get("operation_id")) if isinstance(item, dict) else None
            if op_id is None:
                return "every operation to reconcile needs an 'operation_id'"
            ids.append((op_id, _value(item.get("agent_id"))))
        if not wanted:
            ids = [(r.operation_id, r.agent_id) for r in fw.operations.values()]
        for op_id, agent_id in ids:
            record = fw.operations.get(op_id)
            if record is not None:
                status = {k: v for k, v in record.statuses[-1].items() if k != "uuid"}
            else:
                status = operation_feedback.reconcile_status(self, op_id, agent_id)
            self._send_framework(
                fw,
                {"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {"status": status}},
            )
        return None

    # -- from an operator ---------------------------------------------------------------------

    def _operator_operation(
        self,
        agent_id: str,
        kind: str,
        payload: dict[str, Any],
        principal: str | None,
        now: float,
    ) -> None:
        """An operator's RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES,
        DESTROY_VOLUMES, GROW_VOLUME or SHRINK_VOLUME on an agent's unused resources
        (outstanding offers of the agent are rescinded first so they count as unused).
        Raises OperatorRefusal (400 malformed, not allowed or no such agent, 409 the
        resources are not there or a volume is in use); nothing changes then."""
        agent = self.agents.get(agent_id)
        if agent is None:
            raise OperatorRefusal(400, "No agent found with specified ID")  # Mesos' words
        try:
            conversion = resource_ops.parse_operation(kind, payload, principal)
            self._authorize(conversion, principal)
        except OperationError as e:
            status = 403 if str(e).startswith("Not authorized") else 400
            raise OperatorRefusal(status, str(e)) from None
        try:
            self._check_agent_side(agent, conversion)
        except OperationError as e:
            raise OperatorRefusal(409, str(e)) from None
        if not agent.total.contains(conversion.consumed):
            raise OperatorRefusal(
                409,
                f"{kind}: the agent does not have {conversion.consumed.to_text()} "
                f"(it has {agent.total.to_text()})",
            )
        unused = self.allocator.available(agent_id)
        for offer_id in sorted(agent.offers):
            offer = self.offers.get(offer_id)
            if offer is not None:
                unused = unused + offer.resources
        try:
            resource_ops.apply(unused, conversion, "unused part of the agent")
        except OperationError as e:
            raise OperatorRefusal(409, str(e)) from None
        self._rescind_offers_of_agent(agent, now)
        self._apply_to_agent(agent, conversion)
        self.allocator.update_agent_total(agent_id, agent.total)
        self.allocation_wanted = True

    def _rescind_offers_of_agent(self, agent: Agent, now: float) -> None:
        for offer_id in list(agent.offers):
            offer = self.offers.get(offer_id)
            if offer is not None:
                self._rescind(offer, now)

    # -- views --------------------------------------------------------------------------------

    def operations_json(self) -> list[dict[str, Any]]:
        """GET_OPERATIONS: every operation with an id that frameworks have not finished
        with (a terminal status not yet acknowledged, or one still pending)."""
        out: list[dict[str, Any]] = []
        for fw in self.frameworks.values():
            out.extend(r.to_json() for r in fw.operations.values())
        return out


def _value(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("value"), str) and obj["value"]:
        return str(obj["value"])
    return None


def _pool_role(pools: dict[str, Resources], conversion: Conversion, payload: Any) -> str:
    """The offer role whose resources the operation uses: the ``allocation_info`` role of
    its resources when given (MULTI_ROLE frameworks), else the one pool that holds them."""
    role = _allocation_role(payload)
    if role is not None:
        if role not in pools:
            raise OperationError(f"{conversion.kind}: no resources were offered to role '{role}'")
        return role
    if len(pools) == 1:
        return next(iter(pools))
    for role, pool in pools.items():
        if pool.contains(conversion.consumed):
            return role
    raise OperationError(
        f"{conversion.kind}: insufficient resources: {conversion.consumed.to_text()} is not "
        "part of any one role's offered resources"
    )


def _check_reservation_roles(conversion: Conversion, role: str, roles: list[str]) -> None:
    """A framework reserves for the role its offer was allocated to, one of its own roles
    (Mesos' RESERVE validation for the framework API; operators reserve for any role)."""
    if role not in roles:
        raise OperationError(
            f"A reserve operation was attempted for a resource allocated to role '{role}', "
            f"but the framework only has roles '{{ {', '.join(roles)} }}'"
        )
    for (_name, stack, _disk), _ in conversion.converted.items():
        if stack[-1].role != role:
            raise OperationError(
                f"A reserve operation was attempted for a resource with role "
                f"'{stack[-1].role}', but the resource was allocated to role '{role}'"
            )


def _allocation_role(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    for key in ("resources", "volumes"):
        items = payload.get(key)
        for r in items if isinstance(items, list) else ():
            info = r.get("allocation_info") if isinstance(r, dict) else None
            if isinstance(info, dict) and isinstance(info.get("role"), str):
                return str(info["role"])
    volume = payload.get("volume")
    if isinstance(volume, dict) and isinstance(volume.get("allocation_info"), dict):
        role = volume["allocation_info"].get("role")
        return role if isinstance(role, str) else None
    return None

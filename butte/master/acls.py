"""Authorization with Mesos' ACLs (``--acls``): which principal may do what to which object.

The file is Mesos' JSON::

    {"permissive": false,
     "register_frameworks": [{"principals": {"values": ["ops"]}, "roles": {"values": ["web"]}}],
     "run_tasks": [{"principals": {"type": "ANY"}, "users": {"values": ["nobody"]}}],
     "teardown_frameworks": [{"principals": {"values": ["ops"]},
                              "framework_principals": {"type": "ANY"}}]}

Each action holds a list of rules; a rule has a subject (``principals``) and an object (the
action's own key). An entity is ``{"values": [...]}``, ``{"type": "ANY"}`` or
``{"type": "NONE"}``. As Mesos' local authorizer does, the first rule whose subject and object
both *match* decides: it allows when both also *allow* (ANY and NONE match everything, only
NONE allows nothing; values match and allow their members). When no rule matches,
``permissive`` (default true) decides. Requests without a principal (authentication off)
match only ANY subjects. Pure: parsed once, asked from the core and the shell.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Action -> the key of its object, as Mesos' ACL protobuf names them.
OBJECTS = {
    "register_frameworks": "roles",
    "run_tasks": "users",
    "teardown_frameworks": "framework_principals",
    "reserve_resources": "roles",
    "unreserve_resources": "reserver_principals",
    "create_volumes": "roles",
    "destroy_volumes": "creator_principals",
    "resize_volume": "roles",  # Mesos documents this spelling; its ACLs message the next
    "resize_volumes": "roles",
    "get_quotas": "roles",
    "update_quotas": "roles",
    # Mesos' older quota actions (before update_quotas).
    "set_quotas": "roles",
    "remove_quotas": "quota_principals",
    "view_frameworks": "users",
    "view_tasks": "users",
    "view_executors": "users",
    "access_sandboxes": "users",
    "access_mesos_logs": "logs",
    "update_weights": "roles",
    "view_roles": "roles",
    "get_endpoints": "paths",
    "mark_agents_gone": "agents",
    "drain_agents": "agents",
    "deactivate_agents": "agents",
    "get_maintenance_schedules": "machines",
    "update_maintenance_schedules": "machines",
    "start_maintenances": "machines",
    "stop_maintenances": "machines",
    "get_maintenance_statuses": "machines",
    "launch_nested_containers": "users",
    "launch_nested_container_sessions": "users",
    "kill_nested_containers": "users",
    "wait_nested_containers": "users",
    "remove_nested_containers": "users",
    "attach_containers_input": "users",
    "attach_containers_output": "users",
    "view_containers": "users",
    "launch_standalone_containers": "users",
    "kill_standalone_containers": "users",
    "wait_standalone_containers": "users",
    "remove_standalone_containers": "users",
    "view_standalone_containers": "users",
    "set_log_level": "level",
    "register_agents": "agents",
    "reactivate_agents": "agents",
    "view_flags": "flags",
    "prune_images": "images",
    "view_resource_providers": "resource_providers",
    "mark_resource_providers_gone": "resource_providers",
    "modify_resource_provider_configs": "resource_providers",
}

# The view_* / access_* actions that filter what state endpoints show (butte.master.view_acls).
VIEW_ACTIONS = ("view_frameworks", "view_tasks", "view_executors", "view_roles")

# The paths `get_endpoints` guards, as Mesos' AUTHORIZABLE_ENDPOINTS lists them (GET only; the
# object is the path without a /master or /slave(1) prefix). Other paths are not authorized
# by this action: an ACL naming one is parsed but has no effect.
AUTHORIZABLE_ENDPOINTS = frozenset(
    {
        "/containers",
        "/containerizer/debug",
        "/files/debug",
        "/logging/toggle",
        "/metrics/snapshot",
        "/monitor/statistics",
    }
)

# What a state document (the master's or an agent's ``/state``) shows of the process's flags:
# left out for a principal that may not `view_flags`, as Mesos does.
FLAG_KEYS = ("flags", "cluster", "log_dir", "external_log_file")


class AclError(ValueError):
    """An ACL file that cannot be used."""


@dataclass(frozen=True)
class Entity:
    """ANY, NONE, or a set of values."""

    kind: str  # "ANY" | "NONE" | "SOME"
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        if self.kind != "SOME":
            return True
        return value is not None and value in self.values

    def allows(self, value: str | None) -> bool:
        if self.kind == "ANY":
            return True
        if self.kind == "NONE":
            return False
        return value is not None and value in self.values


ANY = Entity("ANY")


def _entity(raw: Any, where: str) -> Entity:
    if raw is None:
        return ANY  # an absent entity is ANY, as in Mesos
    if not isinstance(raw, Mapping):
        raise AclError(f"{where}: expected an object")
    if "values" in raw:
        values = raw["values"]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AclError(f"{where}: 'values' must be a list of strings")
        return Entity("SOME", frozenset(values))
    kind = raw.get("type", "ANY")
    if kind not in ("ANY", "NONE"):
        raise AclError(f"{where}: 'type' must be ANY or NONE (or 'values' given)")
    return Entity(kind)


@dataclass(frozen=True)
class Acls:
    """Parsed ACLs: action -> [(subject, object)]; see the module docstring."""

    permissive: bool = True
    rules: Mapping[str, tuple[tuple[Entity, Entity], ...]] = field(default_factory=dict)

    def allowed(self, action: str, principal: str | None, obj: str | None) -> bool:
        """Whether ``principal`` may do ``action`` to ``obj``."""
        for subject, target in self.rules.get(action, ()):
            if subject.matches(principal) and target.matches(obj):
                return subject.allows(principal) and target.allows(obj)
        return self.permissive

    def authorized(self, action: str, principal: str | None, obj: str | None = None) -> bool:
        """Whether ``principal`` may do ``action`` to ``obj`` (the same as `allowed`; the
        name other modules call). ``obj`` is the action's object: a role, a user, an
        agent id, a machine, ... (`OBJECTS` names which); None matches only ANY objects."""
        return self.allowed(action, principal, obj)

    def unrestricted(self, action: str) -> bool:
        """True when every principal may do ``action`` to every object, whatever they are
        (no rule could refuse it): callers skip per-object checks then, so the default,
        permissive setup costs nothing per object."""
        rules = self.rules.get(action, ())
        if not rules:
            return self.permissive
        first_subject, first_target = rules[0]
        # A leading ANY -> ANY rule decides everything; anything else may refuse someone.
        return first_subject.kind == "ANY" and first_target.kind == "ANY"


def forbidden(acls: Acls, action: str, principal: str | None, obj: str | None = None) -> str | None:
    """The 403 message when ``principal`` may not do ``action`` (to ``obj``), else None."""
    if acls.allowed(action, principal, obj):
        return None
    who = f"'{principal}'" if principal is not None else "an unauthenticated principal"
    what = f" {obj}" if obj is not None else ""
    return f"Forbidden: {who} may not {action.replace('_', ' ')}{what} ({action})"


def endpoint_forbidden(acls: Acls, principal: str | None, path: str) -> str | None:
    """`forbidden` for a GET of one of `AUTHORIZABLE_ENDPOINTS` (``path`` without prefix):
    the ``get_endpoints`` action, whose object is the path."""
    if acls.unrestricted("get_endpoints"):
        return None
    return forbidden(acls, "get_endpoints", principal, path)


def without_flags(doc: dict[str, Any]) -> dict[str, Any]:
    """A state document without what `FLAG_KEYS` names (a copy; ``doc`` is not changed)."""
    return {k: v for k, v in doc.items() if k not in FLAG_KEYS}


def authorized(acls: Acls, action: str, principal: str | None, obj: str | None = None) -> bool:
    """Module-level form of `Acls.authorized`, for callers holding the ACLs as a value."""
    if action not in OBJECTS:
        raise KeyError(f"unknown ACL action '{action}'")
    return acls.allowed(action, principal, obj)


def parse_acls(text: str) -> Acls:
    """Acls from ``--acls`` JSON text; raises AclError naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        raise AclError("ACLs are not valid JSON") from None
    if not isinstance(data, dict):
        raise AclError("ACLs must be a JSON object")
    permissive = data.get("permissive", True)
    if not isinstance(permissive, bool):
        raise AclError("'permissive' must be true or false")
    rules: dict[str, tuple[tuple[Entity, Entity], ...]] = {}
    for action, entries in data.items():
        if action == "permissive":
            continue
        if action not in OBJECTS:
            raise AclError(f"unknown ACL action '{action}'")
        if not isinstance(entries, list):
            raise AclError(f"{action}: expected a list of rules")
        parsed = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise AclError(f"{action}[{i}]: expected an object")
            unknown = set(entry) - {"principals", OBJECTS[action]}
            if unknown:
                raise AclError(f"{action}[{i}]: unknown keys {sorted(unknown)}")
            subject = _entity(entry.get("principals"), f"{action}[{i}].principals")
            target = _entity(entry.get(OBJECTS[action]), f"{action}[{i}].{OBJECTS[action]}")
            parsed.append((subject, target))
        rules[action] = tuple(parsed)
    return Acls(permissive, rules)

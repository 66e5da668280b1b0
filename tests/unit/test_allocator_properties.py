"""Property test: random event sequences against the hierarchical DRF allocator, checking its
invariants after every step and, after every cycle, that each allocation was allowed and that
nothing offerable was left behind (Mesos stage 2 hands out everything it may)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from butte.core.resources import Resources, parse_resources
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions, parse_min_allocatable

AGENTS = [f"a{i}" for i in range(6)]
FRAMEWORKS = [f"f{i}" for i in range(5)]
ROLES = ["*", "eng", "eng/web", "ops"]
SHAPES = [
    parse_resources(text)
    for text in (
        "cpus:4;mem:1024;ports:[31000-31009]",
        "cpus:2;mem:512;gpus:1",
        "cpus:1;mem:256;cpus(eng):2;mem(eng):128",
        "cpus:8;mem:64",
        "cpus:0.5;mem:16",
        "mem(ops):300;cpus(eng/web):1",
        "cpus:0.1;mem:16;cpus(eng):2;mem(eng):512",
    )
]
MIN_ALLOCATABLE = parse_min_allocatable("cpus:0.5|mem:128")

roles_strategy = st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True)
some_roles = st.none() | st.lists(st.sampled_from(ROLES), max_size=2)


def half(resources: Resources) -> Resources:
    """Roughly half of ``resources``: scalars halved, ranges and sets dropped."""
    return Resources({k: v // 2 for k, v in resources.items() if isinstance(v, int) and v // 2 > 0})


def meets_min(candidate: Resources) -> bool:
    have = candidate.quantities()
    return any(all(have.get(n, 0) >= v for n, v in alt.items()) for alt in MIN_ALLOCATABLE)


class AllocatorMachine(RuleBasedStateMachine):
    """Drives the allocator and keeps the small model needed to judge each cycle."""

    def __init__(self) -> None:
        super().__init__()
        options = AllocatorOptions(allocation_interval=1.0, min_allocatable=MIN_ALLOCATABLE)
        self.alloc = HierarchicalDRFAllocator(options, seed=3)
        self.now = 0.0
        self.frameworks: dict[str, dict] = {}
        self.agents: dict[str, dict] = {}

    @initialize(
        shapes=st.lists(st.sampled_from(SHAPES), min_size=1, max_size=len(AGENTS)),
        roles=st.lists(roles_strategy, min_size=1, max_size=len(FRAMEWORKS)),
    )
    def populate(self, shapes, roles):
        for agent, shape in zip(AGENTS, shapes, strict=False):
            self.add_agent(agent, shape, False)
        for fw, fw_roles in zip(FRAMEWORKS, roles, strict=False):
            self.add_or_update_framework(fw, fw_roles, fw == "f0", [])

    # agents ---------------------------------------------------------------------------------

    @rule(agent=st.sampled_from(AGENTS), shape=st.sampled_from(SHAPES), used=st.booleans())
    def add_agent(self, agent, shape, used):
        held = {}
        if used and self.frameworks:
            fw = sorted(self.frameworks)[0]
            held = {(fw, self.frameworks[fw]["roles"][0]): half(shape.unreserved())}
        self.alloc.add_agent(agent, shape, used={k: v for k, v in held.items() if v})
        self.agents[agent] = {"total": shape, "active": True}

    @rule(agent=st.sampled_from(AGENTS))
    def remove_agent(self, agent):
        self.alloc.remove_agent(agent)
        self.agents.pop(agent, None)

    @rule(agent=st.sampled_from(AGENTS))
    def toggle_agent(self, agent):
        if agent in self.agents:
            state = self.agents[agent]
            state["active"] = not state["active"]
            if state["active"]:
                self.alloc.activate_agent(agent)
            else:
                self.alloc.deactivate_agent(agent)

    @rule(agent=st.sampled_from(AGENTS), shape=st.sampled_from(SHAPES))
    def update_total(self, agent, shape):
        if agent in self.agents:
            self.alloc.update_agent_total(agent, shape)
            self.agents[agent]["total"] = shape

    # frameworks -----------------------------------------------------------------------------

    @rule(
        fw=st.sampled_from(FRAMEWORKS),
        roles=roles_strategy,
        gpu=st.booleans(),
        suppressed=st.lists(st.sampled_from(ROLES), max_size=2),
    )
    def add_or_update_framework(self, fw, roles, gpu, suppressed):
        caps = ["GPU_RESOURCES"] if gpu else []
        if fw in self.frameworks:
            self.alloc.update_framework(fw, roles, capabilities=caps, suppressed_roles=suppressed)
            active = self.frameworks[fw]["active"]
        else:
            self.alloc.add_framework(fw, roles, capabilities=caps, suppressed_roles=suppressed)
            active = True
        self.frameworks[fw] = {
            "roles": roles,
            "suppressed": {r for r in suppressed if r in roles},
            "gpu": gpu,
            "active": active,
        }

    @rule(fw=st.sampled_from(FRAMEWORKS))
    def remove_framework(self, fw):
        for (agent, role), held in self.alloc.allocated(fw).items():
            self.alloc.recover_resources(fw, agent, role, held, refuse_seconds=None, now=self.now)
        self.alloc.remove_framework(fw)
        self.frameworks.pop(fw, None)

    @rule(fw=st.sampled_from(FRAMEWORKS))
    def toggle_framework(self, fw):
        if fw in self.frameworks:
            state = self.frameworks[fw]
            state["active"] = not state["active"]
            if state["active"]:
                self.alloc.activate_framework(fw)
            else:
                self.alloc.deactivate_framework(fw)

    @rule(fw=st.sampled_from(FRAMEWORKS), roles=some_roles)
    def suppress(self, fw, roles):
        self.alloc.suppress(fw, roles)
        if fw in self.frameworks:
            state = self.frameworks[fw]
            state["suppressed"] |= set(state["roles"] if roles is None else roles) & set(
                state["roles"]
            )

    @rule(fw=st.sampled_from(FRAMEWORKS), roles=some_roles)
    def revive(self, fw, roles):
        self.alloc.revive(fw, roles)
        if fw in self.frameworks:
            self.frameworks[fw]["suppressed"] -= set(
                self.frameworks[fw]["roles"] if roles is None else roles
            )

    @rule(weights=st.dictionaries(st.sampled_from(ROLES), st.sampled_from([0.5, 1.0, 3.0])))
    def update_weights(self, weights):
        self.alloc.update_weights(weights)

    # resources ------------------------------------------------------------------------------

    @rule(
        pick=st.integers(0, 50),
        part=st.booleans(),
        refuse=st.sampled_from([None, 0.0, 0.5, 3.0]),
        stale=st.booleans(),
    )
    def recover(self, pick, part, refuse, stale):
        held = sorted(
            (fw, agent, role, resources)
            for fw in FRAMEWORKS
            for (agent, role), resources in self.alloc.allocated(fw).items()
        )
        if not held:
            return
        fw, agent, role, resources = held[pick % len(held)]
        if stale:
            resources = self.agents[agent]["total"]  # more than is held: harmless
        elif part:
            resources = half(resources) or resources
        self.alloc.recover_resources(
            fw, agent, role, resources, refuse_seconds=refuse, now=self.now
        )

    @rule(step=st.sampled_from([0.0, 0.5, 1.0, 4.0]))
    def allocate(self, step):
        self.now += step
        filters = {fw: self.alloc.offer_filters(fw) for fw in self.frameworks}
        before = {agent: self.alloc.available(agent) for agent in self.agents}
        for a in self.alloc.allocate(self.now):
            self.check_allowed(a, before[a.agent_id], filters)
            before[a.agent_id] = before[a.agent_id] - a.resources
        self.check_nothing_left_behind()

    @rule(step=st.sampled_from([0.0, 1.0, 4.0]))
    def allocate_again(self, step):
        self.allocate(step)  # a second rule: cycles are what this test is about

    # judging --------------------------------------------------------------------------------

    def eligible(self, fw: str, role: str, agent: str, candidate: Resources) -> bool:
        state = self.frameworks.get(fw)
        if state is None or not state["active"]:
            return False
        if role not in state["roles"] or role in state["suppressed"]:
            return False
        if self.agents[agent]["total"].has("gpus") and not state["gpu"]:
            return False
        for f_role, f_agent, refused, expires in self.alloc.offer_filters(fw):
            if (f_role, f_agent) == (role, agent) and expires > self.now:
                if refused.contains(candidate):
                    return False
        return True

    def check_allowed(self, a, available: Resources, filters) -> None:
        assert self.agents[a.agent_id]["active"], "offer from an inactive agent"
        assert a.resources == available.allocatable_to(a.role), "not everything allocatable"
        assert meets_min(a.resources), "below min_allocatable"
        state = self.frameworks[a.framework_id]
        assert state["active"] and a.role in state["roles"] and a.role not in state["suppressed"]
        if self.agents[a.agent_id]["total"].has("gpus"):
            assert state["gpu"], "GPU agent offered to a framework without GPU_RESOURCES"
        for role, agent, refused, expires in filters[a.framework_id]:
            if (role, agent) == (a.role, a.agent_id) and expires > self.now:
                assert not refused.contains(a.resources), "a live filter was ignored"

    def check_nothing_left_behind(self) -> None:
        for agent, state in self.agents.items():
            if not state["active"]:
                continue
            available = self.alloc.available(agent)
            for fw, fw_state in self.frameworks.items():
                for role in fw_state["roles"]:
                    candidate = available.allocatable_to(role)
                    if candidate and meets_min(candidate):
                        assert not self.eligible(fw, role, agent, candidate), (
                            f"{agent} still has {candidate} for {fw} in {role}"
                        )

    @invariant()
    def books_balance(self) -> None:
        self.alloc.check_invariants()


TestAllocatorProperties = AllocatorMachine.TestCase
TestAllocatorProperties.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

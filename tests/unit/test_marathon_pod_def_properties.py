"""Pod definitions under generated input (butte/frameworks/marathon/pods_def.py): whatever
JSON comes in, `normalize_pod` answers a canonical pod or `Invalid` (a 422 naming fields),
never another exception; a canonical pod is accepted back unchanged, and its task group
builds."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.frameworks.marathon.appdef import Invalid
from butte.frameworks.marathon.pods_def import build_task_group, normalize_pod

SETTINGS = {
    "max_examples": 300,
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
ODD: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["/", "..", "/abs", "a/../b", "data", "v", "DOCKER", "APPC", "hostname"]),
)
JSON = st.recursive(
    ODD,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = st.sampled_from(["main", "side", "v", "data"])


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``values``, sometimes anything: enough whole pods get through to be built."""
    # (sampled_from draws about evenly; st.integers would favour its bounds)
    return st.sampled_from(range(20)).flatmap(lambda i: JSON if i == 19 else values)


CONTAINER = st.fixed_dictionaries(
    {
        "name": _maybe(NAMES),
        "exec": _maybe(
            st.fixed_dictionaries(
                {"command": _maybe(st.fixed_dictionaries({"shell": _maybe(st.just("true"))}))},
                optional={"overrideEntrypoint": _maybe(st.booleans())},
            )
        ),
    },
    optional={
        "image": _maybe(
            st.fixed_dictionaries(
                {"kind": _maybe(st.just("DOCKER")), "id": _maybe(st.just("svc:1"))},
                optional={"forcePull": _maybe(st.booleans())},
            )
        ),
        "resources": _maybe(
            st.fixed_dictionaries(
                {}, optional={"cpus": _maybe(st.just(0.1)), "mem": _maybe(st.just(16))}
            )
        ),
        "volumeMounts": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": _maybe(st.sampled_from(["v", "data"])),
                        "mountPath": _maybe(st.sampled_from(["d", "/d"])),
                    },
                    optional={"readOnly": _maybe(st.booleans())},
                ),
                max_size=2,
            )
        ),
        "artifacts": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"uri": _maybe(st.just("http://x/y.tgz"))},
                    optional={"destPath": _maybe(st.just("in")), "extract": _maybe(st.booleans())},
                ),
                max_size=2,
            )
        ),
        "user": _maybe(st.sampled_from(["nobody", "root"])),
        "endpoints": _maybe(
            st.lists(
                st.fixed_dictionaries({"name": _maybe(NAMES)}, optional={"hostPort": ODD}),
                max_size=2,
            )
        ),
    },
)
VOLUMES = st.lists(
    st.fixed_dictionaries(
        {"name": _maybe(st.sampled_from(["v", "data"]))},
        optional={"host": _maybe(st.sampled_from(["/srv", "rel"]))},
    ),
    max_size=2,
)
POD = st.fixed_dictionaries(
    {
        "id": _maybe(st.just("/fuzz/pod")),
        "containers": _maybe(st.lists(CONTAINER, min_size=1, max_size=3)),
        "volumes": _maybe(st.one_of(st.just([{"name": "v"}, {"name": "data"}]), VOLUMES)),
    },
    optional={
        "user": _maybe(st.just("nobody")),
        "scheduling": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "placement": _maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "constraints": _maybe(
                                    st.lists(
                                        st.lists(
                                            st.sampled_from(
                                                ["hostname", "UNIQUE", "GROUP_BY", "2"]
                                            ),
                                            max_size=3,
                                        ),
                                        max_size=2,
                                    )
                                )
                            },
                        )
                    )
                },
            )
        ),
    },
)


@settings(**SETTINGS)
@given(POD)
def test_any_definition_is_a_canonical_pod_or_a_422(raw: dict[str, Any]) -> None:
    try:
        pod = normalize_pod(raw)
    except Invalid as e:
        assert e.details and all(d["path"].startswith("/") for d in e.details)
        return
    assert normalize_pod(pod) == pod
    versioned = {**pod, "version": "2026-12-06T00:00:00.000Z"}
    ports = {ep["name"]: 31000 + i for i, ep in enumerate(
        ep for c in pod["containers"] for ep in c["endpoints"]
    )}  # fmt: skip
    executor, tasks = build_task_group(versioned, "p.instance-1", "f", "a", "h", [], {}, ports)
    assert len(tasks) == len(pod["containers"])
    assert executor["type"] == "DEFAULT"

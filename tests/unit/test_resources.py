"""Resources: parsing of every Mesos form, arithmetic laws, wire formats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from butte.core.resources import (
    ResourceError,
    Resources,
    normalize_ranges,
    parse_attributes,
    parse_resources,
    ranges_contains,
    ranges_subtract,
)


def test_text_form_with_roles_ranges_sets():
    r = parse_resources("cpus:4;mem:2048;cpus(web):1.5;ports:[31000-31005, 31010-31020];z:{a,b}")
    assert r.scalar("cpus") == 5.5
    assert r.reserved("web").scalar("cpus") == 1.5
    assert r.ranges("ports") == ((31000, 31005), (31010, 31020))
    assert r.to_legacy_map()["z"] == "{a,b}"
    assert r.to_legacy_map()["ports"] == "[31000-31005, 31010-31020]"


@pytest.mark.parametrize(
    "text",
    ["cpus", "cpus:-1", "cpus:abc", "ports:[5-1]", "ports:[1-2", "cpus(-x):1", "cpus:nan", ":1"],
)
def test_bad_text_is_rejected_with_a_message(text):
    with pytest.raises(ResourceError) as e:
        parse_resources(text)
    assert str(e.value)


def test_fixed_point_scalars_do_not_drift():
    a = parse_resources("cpus:0.1")
    total = Resources()
    for _ in range(3):
        total = total + a
    assert total == parse_resources("cpus:0.3")
    assert (total - a - a - a).is_empty()


def test_json_pre_and_post_refinement_formats_round_trip():
    pre = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}, "role": "*"},
        {
            "name": "mem",
            "type": "SCALAR",
            "scalar": {"value": 64},
            "role": "db",
            "reservation": {"principal": "ops"},
        },
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 10}, "role": "db"},
    ]
    r = Resources.from_json(pre)
    post = r.to_json("post")
    assert Resources.from_json(post) == r
    mem = [x for x in post if x["name"] == "mem"][0]
    assert mem["reservations"] == [{"type": "DYNAMIC", "role": "db", "principal": "ops"}]
    assert "role" not in mem
    disk = [x for x in r.to_json("pre") if x["name"] == "disk"][0]
    assert disk["role"] == "db" and "reservation" not in disk
    endpoint = [x for x in r.to_json("endpoint") if x["name"] == "mem"][0]
    assert endpoint["role"] == "db" and endpoint["reservations"]


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": -1}},
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": "x"}},
        {"name": "cpus", "type": "SCALAR"},
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 5, "end": 1}]}},
        {"name": "x", "type": "TEXT"},
        {"type": "SCALAR", "scalar": {"value": 1}},
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "role": "a b"},
        "not an object",
    ],
)
def test_bad_json_resources_are_rejected(bad):
    with pytest.raises(ResourceError):
        Resources.from_json([bad])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("revocable", {}, "revocable resources are not supported"),
        ("shared", {}, "shared resources are not supported"),
        ("provider_id", {"value": "csi"}, "resource providers are not supported"),
    ],
)
def test_resource_fields_butte_lacks_are_refused_not_dropped(field, value, message):
    # Read as plain resources they would be quietly something else (an unshared volume, a
    # firm cpu): refused, as every unimplemented field.
    volume = {"persistence": {"id": "v"}, "volume": {"container_path": "v", "mode": "RW"}}
    resource = {"name": "disk", "type": "SCALAR", "scalar": {"value": 1}, "disk": volume}
    with pytest.raises(ResourceError, match=message):
        Resources.from_json([{**resource, field: value}])
    assert Resources.from_json([{**resource, field: None}])  # null: the field is absent


def test_allocatable_to_includes_ancestor_reservations():
    r = parse_resources("cpus:1;cpus(eng):2;cpus(eng/web):4;cpus(ops):8")
    assert r.allocatable_to("eng/web").scalar("cpus") == 7
    assert r.allocatable_to("eng").scalar("cpus") == 3
    assert r.allocatable_to("other").scalar("cpus") == 1


def test_attributes_typing():
    attrs = {a.name: a for a in parse_attributes("rack:r1;cores:8;ports:[1-3];tags:{a,b}")}
    assert attrs["rack"].type == "TEXT" and attrs["cores"].type == "SCALAR"
    assert attrs["ports"].to_json()["ranges"] == {"range": [{"begin": 1, "end": 3}]}
    assert attrs["tags"].legacy_value() == "{a,b}"


ranges_st = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 20)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=6,
).map(normalize_ranges)

resources_st = st.builds(
    lambda cpus, mem, ports, items, role: Resources.from_json(
        [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": role},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": b, "end": e} for b, e in ports]},
            },
            {"name": "s", "type": "SET", "set": {"item": sorted(items)}},
        ]
    ),
    st.integers(0, 8000).map(lambda m: m / 1000),
    st.integers(0, 4096),
    ranges_st,
    st.sets(st.sampled_from("abcde")),
    st.sampled_from(["*", "a", "b/c"]),
)


@settings(max_examples=200, deadline=None)
@given(resources_st, resources_st)
def test_arithmetic_laws(a, b):
    total = a + b
    assert total.contains(a) and total.contains(b)
    assert total == b + a
    assert a.contains(Resources())
    back = total - b
    # Ranges and sets may overlap, so subtraction can remove shared numbers; scalars are exact.
    assert back.quantities() == a.quantities()
    assert a.contains(a - b)
    assert (a - a).is_empty()
    assert Resources.from_json(a.to_json("endpoint")) == a
    assert parse_resources(a.to_text()) == a


@settings(max_examples=200, deadline=None)
@given(ranges_st, ranges_st)
def test_range_subtraction_matches_sets(a, b):
    def numbers(r):
        return {n for lo, hi in r for n in range(lo, hi + 1)}

    assert numbers(ranges_subtract(a, b)) == numbers(a) - numbers(b)
    assert ranges_contains(a, b) == (numbers(b) <= numbers(a))

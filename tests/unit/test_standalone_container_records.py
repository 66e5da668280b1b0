"""The pure parts of standalone containers (`butte.agent.nested`, `butte.agent.nested_api`):
their checkpoint record, where recovery finds them, and the validation of their resources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from butte.agent import paths
from butte.agent.nested import NestedError, NestedRecord, read_standalone_checkpoints
from butte.agent.nested_api import standalone_resources


def record(**changes: object) -> NestedRecord:
    fields: dict = {
        "container_id": "sa",
        "parent_id": "",
        "sandbox": "/w/containers/sa",
        "session": False,
        "tty": False,
        "launcher_pid": 42,
        "launcher_start": 1234,
        "boot_id": "b",
        "resources": (("cpus", 0.5), ("mem", 64.0)),
        "isolated": True,
        **changes,
    }
    return NestedRecord(**fields)


def test_a_standalone_record_round_trips_with_its_resources() -> None:
    assert NestedRecord.from_json(record().to_json()) == record()


def test_a_record_of_an_older_agent_reads_without_resources() -> None:
    raw = json.loads(record().to_json())
    del raw["resources"], raw["isolated"]
    parsed = NestedRecord.from_json(json.dumps(raw).encode())
    assert parsed == record(resources=(), isolated=False)


@pytest.mark.parametrize(
    "bad",
    [
        {"container_id": "../x"},
        {"parent_id": "a/b"},
        {"launcher_pid": 0},
        {"resources": [["cpus"]]},
        {"resources": [["cpus", "lots"]]},
    ],
)
def test_a_record_that_is_not_one_is_refused(bad: dict) -> None:
    raw = {**json.loads(record().to_json()), **bad}
    assert NestedRecord.from_json(json.dumps(raw).encode()) is None


def test_recovery_reads_standalone_checkpoints_where_their_ids_say(tmp_path: Path) -> None:
    work = str(tmp_path)
    good = Path(paths.standalone_dir(work, "sa"))
    good.mkdir(parents=True)
    (good / "nested.info").write_bytes(record().to_json())
    (good / "status").write_bytes(b"768\n")
    # A record under another container's name is not trusted; a torn one is unreadable.
    elsewhere = Path(paths.standalone_dir(work, "other"))
    elsewhere.mkdir()
    (elsewhere / "nested.info").write_bytes(record().to_json())
    torn = Path(paths.standalone_dir(work, "torn"))
    torn.mkdir()
    (torn / "nested.info").write_bytes(b'{"container_id": "to')
    found = {item.container_id: item for item in read_standalone_checkpoints(work)}
    assert set(found) == {"sa", "other", "torn"}
    assert found["sa"].record == record() and found["sa"].status == b"768\n"
    assert found["sa"].parent_id == ""
    assert found["other"].record is None and found["torn"].record is None


VOLUME = {"mode": "RW", "container_path": "data"}


def scalar(name: str, value: object, **extra: object) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


def test_resources_are_summed_per_name() -> None:
    raw = [scalar("cpus", 0.25), scalar("mem", 32), scalar("cpus", 0.25), scalar("disk", 10)]
    assert standalone_resources(raw) == (("cpus", 0.5), ("disk", 10.0), ("mem", 32.0))
    assert standalone_resources([]) == ()


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ([scalar("cpus", 1, role="web")], "must be unreserved"),
        ([scalar("cpus", 1, reservations=[{"type": "STATIC", "role": "a"}])], "unreserved"),
        ([scalar("cpus", 1, revocable={})], "revocable resources are not supported"),
        (
            [scalar("disk", 1, disk={"persistence": {"id": "p"}, "volume": VOLUME})],
            "persistent volumes",
        ),
        ([scalar("gpus", 1)], "not supported"),
        ([{"name": "ports", "type": "RANGES", "ranges": {"range": []}}], "not supported"),
        ([scalar("mem", -1)], "Invalid resources"),
        ([scalar("mem", float("nan"))], "Invalid resources"),
        ([scalar("mem", "x")], "Invalid resources"),
        ([{"type": "SCALAR"}], "Invalid resources"),
    ],
)
def test_resources_a_standalone_container_may_not_have(resources: list, message: str) -> None:
    with pytest.raises(NestedError) as refused:
        standalone_resources(resources)
    assert refused.value.status == 400
    assert message in refused.value.message

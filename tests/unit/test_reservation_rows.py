"""The rows ``butte reservations``/``butte volumes`` and the web UI's agent page show
(butte/core/reservation_rows.py), and the CLI's lookups of what to name on an agent
(butte/cli/reservations.py)."""

from __future__ import annotations

from typing import Any

import pytest

from butte.cli import reservations as cli
from butte.cli.common import CliError
from butte.core import reservation_rows as rows
from butte.core.resources import Disk, Reservation, Resources

DB = (Reservation("db", "DYNAMIC", "dba", (("team", "x"),)),)
OTHER_DB = (Reservation("db", "DYNAMIC", "bob"),)
ENG = (Reservation("eng"),)
REFINED = (*ENG, Reservation("eng/web", "DYNAMIC"))
VOLUME = Disk(persistence_id="pg", principal="dba", container_path="data")


def total() -> Resources:
    return Resources(
        {
            ("cpus", (), None): 2000,
            ("cpus", DB, None): 1000,
            ("disk", DB, None): 100_000,
            ("disk", DB, VOLUME): 64_000,
            ("cpus", ENG, None): 500,
            ("cpus", REFINED, None): 500,
            ("ports", DB, None): ((31000, 31009),),
        }
    )


def state(tasks: list[dict[str, Any]], executors: list[dict[str, Any]] = ()) -> dict[str, Any]:
    agent = {
        "agent_info": {"id": {"value": "S0"}, "hostname": "h0"},
        "total_resources": [*total().to_json("endpoint"), {"name": "cpus", "type": "BOGUS"}],
    }
    return {
        "get_agents": {"agents": [agent]},
        "get_tasks": {"tasks": tasks},
        "get_executors": {"executors": list(executors)},
    }


def task(tid: str, resources: Resources, state_: str = "TASK_RUNNING") -> dict[str, Any]:
    return {
        "task_id": {"value": tid},
        "agent_id": {"value": "S0"},
        "state": state_,
        "resources": resources.to_json("endpoint", allocation_role="db"),
    }


def test_one_row_per_stack_with_what_tasks_hold():
    held = Resources({("cpus", DB, None): 500, ("disk", DB, VOLUME): 64_000})
    ended = Resources({("cpus", ENG, None): 500})
    executor = {
        "agent_id": {"value": "S0"},
        "executor_info": {
            "executor_id": {"value": "ex"},
            "resources": Resources({("cpus", REFINED, None): 100}).to_json("endpoint"),
        },
    }
    reservations, volumes = rows.rows_from_state(
        state([task("t1", held), task("t0", ended, "TASK_FINISHED")], [executor])
    )
    by_roles = {tuple(r["roles"]): r for r in reservations}
    assert set(by_roles) == {("db",), ("eng",), ("eng", "eng/web")}
    db = by_roles[("db",)]
    assert (db["type"], db["principal"], db["labels"]) == ("DYNAMIC", "dba", {"team": "x"})
    assert db["text"] == "cpus:1;disk:164;ports:[31000-31009]"
    assert (db["used"], db["used_by"], db["volumes"]) == ("cpus:0.5;disk:64", ["t1"], ["pg"])
    assert by_roles[("eng",)]["used"] == "" and by_roles[("eng",)]["type"] == "STATIC"
    assert by_roles[("eng", "eng/web")]["used_by"] == ["executor ex"]
    [vol] = volumes
    assert (vol["id"], vol["role"], vol["size"], vol["used_by"]) == ("pg", "db", 64, ["t1"])
    assert (vol["container_path"], vol["mode"], vol["source"]) == ("data", "RW", "ROOT")
    assert Resources.from_json([vol["resource"]]) == Resources({("disk", DB, VOLUME): 64_000})


def test_a_volume_is_free_when_its_task_ended_or_holds_another():
    other = Disk(persistence_id="other", container_path="data")
    tasks = [
        task("done", Resources({("disk", DB, VOLUME): 64_000}), "TASK_KILLED"),
        task("t2", Resources({("disk", DB, other): 1000})),
    ]
    _, [vol] = rows.rows_from_state(state(tasks))
    assert vol["used_by"] == []


def test_stacks_and_their_choice():
    two = total() + Resources({("cpus", OTHER_DB, None): 1000})
    assert rows.stacks_for(two, ["db"]) == [OTHER_DB, DB]
    with pytest.raises(CliError, match="several reservations"):
        cli.choose_stack(two, ["db"], "S0")
    assert cli.choose_stack(two, ["db"], "S0", reserved_by="dba") == DB
    assert cli.choose_stack(two, ["db"], "S0", labels=(("team", "x"),)) == DB
    assert cli.choose_stack(two, ["db"], "S0", holding="disk") == DB  # bob's holds no disk
    with pytest.raises(CliError, match="no such reservation"):
        cli.choose_stack(two, ["ops"], "S0")
    # the nearest ancestor with a reservation is refined
    assert cli.choose_stack(total(), cli.ancestors("eng/web/x"), "S0") == REFINED
    assert cli.choose_stack(total(), cli.ancestors("eng/api"), "S0") == ENG
    assert cli.ancestors("a/b/c") == ["a/b", "a"] and cli.ancestors("a") == []


def test_command_line_pieces():
    assert cli.plain_amounts("cpus:1;mem:512") == Resources.scalars(cpus=1, mem=512)
    for bad in ("cpus:x", "", "cpus(db):1", "cpus:-1"):
        with pytest.raises(CliError) as e:
            cli.plain_amounts(bad)
        assert e.value.code == 2
    assert cli.parse_labels(["a=1", "b="]) == (("a", "1"), ("b", ""))
    with pytest.raises(CliError):
        cli.parse_labels(["novalue"])
    assert cli.json_resources("cpus:1") is None
    assert cli.json_resources('[{"name": "cpus"}]') == [{"name": "cpus"}]
    for bad in ("[1, 2]", "[{", '[{"a": 1}] x'):
        with pytest.raises(CliError):
            cli.json_resources(bad)
    placed = cli.on_stack(Resources.scalars(cpus=1), DB)
    assert placed == Resources({("cpus", DB, None): 1000})


def test_the_ui_view_of_one_agent_from_the_master_core():
    from master_kit import Harness, command_task, launch_body

    from butte.master import ui_reservations

    h = Harness()
    agent_id = h.register_agent(resources="cpus:2;mem:512;cpus(db):1;mem(db):128")
    fid, stream = h.subscribe(roles=["db"], capabilities=[{"type": "MULTI_ROLE"}])
    h.allocate()
    [offer] = h.offers(stream)
    task = command_task("t1", offer, "cpus(db):1;mem(db):64")
    for r in task["resources"]:
        r["allocation_info"] = {"role": "db"}
    assert h.call(fid, stream, launch_body(offer, task)).status == 202
    view = ui_reservations.agent_resources(h.master, agent_id)
    assert view is not None
    [row] = view["reservations"]
    assert (row["role"], row["used"], row["used_by"]) == ("db", "cpus:1;mem:64", ["t1"])
    hidden = ui_reservations.agent_resources(h.master, agent_id, lambda kind, f: f != fid)
    assert hidden is not None and hidden["reservations"][0]["used_by"] == ["(hidden)"]
    assert ui_reservations.agent_resources(h.master, "nope") is None

"""The agent core driven like its shell drives it, with a fake clock. Every test ends with an
invariant check."""

from __future__ import annotations

import random

import pytest
from agent_kit import (
    AID,
    FID,
    Harness,
    command_task,
    custom_task,
    framework,
    fresh_uuid,
    run,
    started,
)

from butte.agent import machine as machine_module
from butte.core import internal
from butte.core.codec import encode_json
from butte.core.messages import ID, TaskInfo, decode

# -- registration --------------------------------------------------------------------------


def test_first_registration_has_no_id_and_answers_ping():
    h = Harness()
    h.apply(h.agent.master_connected(h.now()))
    (register,) = h.sent(internal.RegisterAgent)
    assert register.agent_info.id is None
    assert register.agent_info.hostname == "node1" and register.agent_info.port == 5051
    assert {r["name"] for r in register.agent_info.resources} == {"cpus", "mem", "ports"}
    assert register.agent_info.attributes == [
        {"name": "rack", "type": "TEXT", "text": {"value": "r1"}}
    ]
    h.master(internal.AgentRegistered(agent_id=ID(AID), master_id="M"))
    assert h.agent.agent_id == AID and h.agent.registered
    h.master(internal.Ping())
    assert h.sent(internal.Pong)
    h.check()


# -- the command task lifecycle ------------------------------------------------------------


def test_run_task_launches_command_executor_with_mesos_environment():
    h = Harness()
    h.register()
    run(h, command_task("t1", "echo hello; exit 3"))
    (launch,) = h.launched.values()
    assert launch.sandbox == "/var/butte/slaves/M-S0/frameworks/M-0000/executors/t1/runs/c0"
    assert launch.argv == ("python", "-m", "butte.agent.executor.command")
    env = launch.env
    assert env["MESOS_FRAMEWORK_ID"] == FID and env["MESOS_EXECUTOR_ID"] == "t1"
    assert env["MESOS_AGENT_ENDPOINT"] == "127.0.0.1:5051"
    assert env["MESOS_SANDBOX"] == env["MESOS_DIRECTORY"] == launch.sandbox
    assert env["MESOS_SLAVE_ID"] == AID and env["MESOS_SLAVE_PID"] == "slave(1)@127.0.0.1:5051"
    assert env["MESOS_HTTP_COMMAND_EXECUTOR"] == "1"
    assert env["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"] == "5secs"
    assert env["MESOS_ALLOCATION_ROLE"] == "web" and env["LIBPROCESS_PORT"] == "0"
    assert "MESOS_CHECKPOINT" not in env  # pymesos would read "0" as true
    assert env["PATH"] == "/usr/bin:/bin"
    ex = h.agent.frameworks[FID].executors["t1"]
    assert ex.info.name == "Command Executor (Task: t1) (Command: sh -c 'echo hello; ...')"
    assert ex.info.source == "t1"
    assert not h.updates()  # nothing is reported before the executor does
    h.check()


def test_checkpointing_framework_gets_mesos_checkpoint():
    h = Harness()
    h.register()
    run(h, command_task("t1"), framework(checkpoint=True))
    (launch,) = h.launched.values()
    assert launch.env["MESOS_CHECKPOINT"] == "1"
    assert launch.env["MESOS_RECOVERY_TIMEOUT"] == "15mins"
    h.check()


def test_subscribe_delivers_subscribed_then_launch():
    h = Harness()
    container = started(h)
    subscribed, launch = h.to_executor[container]
    assert subscribed["type"] == "SUBSCRIBED"
    body = encode_json(subscribed).decode()
    assert '"framework_info":{"user":"u","name":"f","id":{"value":"M-0000"}' in body
    assert subscribed["subscribed"]["agent_info"]["id"] == {"value": AID}
    assert subscribed["subscribed"]["container_id"] == {"value": container}
    assert subscribed["subscribed"]["executor_info"].executor_id == ID("t1")
    assert launch["type"] == "LAUNCH" and launch["launch"]["task"].task_id == ID("t1")
    h.check()


def test_updates_flow_one_at_a_time_and_complete_the_task():
    h = Harness()
    container = started(h)
    assert h.update("t1", "t1", "TASK_STARTING").status == 202
    assert h.update("t1", "t1", "TASK_RUNNING").status == 202
    assert h.events(container).count("ACKNOWLEDGED") == 2  # acked by the agent at once
    (starting,) = h.updates()  # RUNNING waits behind STARTING
    assert starting.state == "TASK_STARTING"
    assert starting.agent_id == ID(AID) and starting.executor_id == ID("t1")
    assert h.agent.frameworks[FID].executors["t1"].tasks["t1"].state == "TASK_RUNNING"
    h.ack(starting)
    running = h.updates()[-1]
    assert running.state == "TASK_RUNNING"
    assert running.container_status["container_id"] == {"value": container}
    assert running.container_status["executor_pid"] == 4242
    h.ack(running)
    h.update("t1", "t1", "TASK_FAILED", message="Command exited with status 3")
    failed = h.updates()[-1]
    assert failed.state == "TASK_FAILED" and failed.message == "Command exited with status 3"
    h.check()
    h.ack(failed)
    ex = h.agent.frameworks[FID].executors["t1"]
    assert not ex.tasks and ex.completed_tasks[0].state == "TASK_FAILED"
    h.apply(h.agent.container_exited(container, 0, h.now()))
    assert FID not in h.agent.frameworks  # nothing left: framework completed
    assert h.agent.completed_frameworks[0].completed_executors[0].id == "t1"
    # From now on its sandbox's gc_delay counts (the shell sets the sandbox's time).
    assert h.removed == [h.agent.completed_frameworks[0].completed_executors[0].sandbox]
    assert not h.sent(internal.ExecutorExited)  # command executors are not reported
    h.check()


def test_a_tasks_statuses_collapse_repeats_of_one_state():
    """As Mesos' agent keeps them: health and check updates of a running task replace the
    previous TASK_RUNNING instead of piling up (and no status keeps its data)."""
    h = Harness()
    started(h)
    h.update("t1", "t1", "TASK_STARTING")
    for _ in range(12):
        h.update("t1", "t1", "TASK_RUNNING", data="eA==")
    task = h.agent.frameworks[FID].executors["t1"].tasks["t1"]
    assert [s.state for s in task.statuses] == ["TASK_STARTING", "TASK_RUNNING"]
    assert all(s.data is None for s in task.statuses)


def test_unacknowledged_update_is_retried_with_backoff():
    h = Harness(status_update_retry_interval_min=0.25, status_update_retry_interval_max=1.0)
    started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    times = []
    start = h.now()
    for _ in range(40):  # binary fractions keep the fake clock exact
        before = len(h.updates())
        h.advance(0.125)
        if len(h.updates()) > before:
            times.append(h.now() - start)
    assert times[:4] == [0.25, 0.75, 1.75, 2.75]
    assert all(s.uuid == h.updates()[0].uuid for s in h.updates())
    h.ack(h.updates()[0])
    before = len(h.updates())
    h.advance(5)
    assert len(h.updates()) == before
    h.check()


def test_an_update_retried_behind_later_ones_carries_the_latest_state():
    """Mesos' agent sets latest_state on what it forwards: the master learns that a task
    ended although its framework has not acknowledged the updates before the end."""
    h = Harness(status_update_retry_interval_min=0.25, status_update_retry_interval_max=1.0)
    started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    h.update("t1", "t1", "TASK_FINISHED")
    h.advance(0.25)  # the retry of the update in flight
    sent = h.sent(internal.StatusUpdate)
    assert sent[-1].status.state == "TASK_RUNNING"
    assert sent[-1].latest_state == "TASK_FINISHED"
    h.check()


def test_duplicate_update_is_acknowledged_but_not_forwarded():
    h = Harness()
    container = started(h)
    body = {
        "type": "UPDATE",
        "framework_id": {"value": FID},
        "executor_id": {"value": "t1"},
        "update": {
            "status": {
                "task_id": {"value": "t1"},
                "state": "TASK_RUNNING",
                "source": "SOURCE_EXECUTOR",
                "uuid": fresh_uuid(7),
            }
        },
    }
    assert h.call(body).status == 202
    assert h.call(body).status == 202
    assert len(h.updates()) == 1
    assert h.events(container).count("ACKNOWLEDGED") == 2
    h.check()


def test_reconnect_reregisters_with_tasks_and_resends_unacked():
    h = Harness()
    started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    first = h.updates()[0]
    h.apply(h.agent.master_disconnected(h.now()))
    h.update("t1", "t1", "TASK_FINISHED")
    assert len(h.updates()) == 1  # nothing goes out while disconnected
    h.to_master.clear()
    h.apply(h.agent.master_connected(h.now()))
    (register,) = h.sent(internal.RegisterAgent)
    assert register.agent_info.id == ID(AID)
    assert [f.id for f in register.frameworks] == [ID(FID)]
    (task,) = register.tasks
    assert task.state == "TASK_FINISHED" and task.status_update_state == "TASK_RUNNING"
    assert task.status_update_uuid == first.uuid and task.executor_id is None
    assert register.executors == []  # command executors are not reported
    assert not h.updates()
    h.master(internal.AgentReregistered(agent_id=ID(AID), master_id="M2"))
    assert [s.uuid for s in h.updates()] == [first.uuid]
    h.check()


# -- killing -------------------------------------------------------------------------------


def test_kill_before_subscribe_kills_without_launching():
    h = Harness()
    h.register()
    run(h, command_task("t1"))
    h.master(internal.KillTask(ID(FID), ID("t1")))
    (killed,) = h.updates()
    assert killed.state == "TASK_KILLED" and killed.source == "SOURCE_AGENT"
    assert killed.reason == "REASON_TASK_KILLED_DURING_LAUNCH"
    assert killed.uuid and killed.agent_id == ID(AID) and killed.executor_id == ID("t1")
    assert [d.container_id for d in h.destroyed] == ["c0"]
    assert h.subscribe("t1").status == 403
    h.apply(h.agent.container_exited("c0", 9, h.now()))
    assert len(h.updates()) == 1  # no second terminal update
    h.ack(killed)
    assert FID not in h.agent.frameworks
    h.check()


def test_kill_of_launched_task_goes_to_executor_with_policy():
    h = Harness()
    container = started(h)
    policy = decode(b'{"grace_period":{"nanoseconds":2000000000}}', internal.KillPolicy)
    h.master(internal.KillTask(ID(FID), ID("t1"), kill_policy=policy))
    kill = h.to_executor[container][-1]
    assert kill["type"] == "KILL" and kill["kill"]["task_id"] == ID("t1")
    assert kill["kill"]["kill_policy"].grace_period.nanoseconds == 2_000_000_000
    h.check()


def test_kill_of_unknown_task_is_lost_or_dropped():
    h = Harness()
    started(h)
    h.master(internal.KillTask(ID(FID), ID("nope")))
    assert h.updates()[-1].state == "TASK_LOST"
    assert h.updates()[-1].reason == "REASON_EXECUTOR_TERMINATED"
    run(h, command_task("t2"), framework(capabilities=[{"type": "PARTITION_AWARE"}]))
    h.master(internal.KillTask(ID(FID), ID("nope2")))
    assert h.updates()[-1].state == "TASK_DROPPED"
    h.master(internal.KillTask(ID("other-fw"), ID("x")))  # unknown framework: ignored
    assert len(h.updates()) == 2
    h.check()


# -- executor exits --------------------------------------------------------------------------


def test_executor_exit_without_terminal_update_fails_its_task():
    h = Harness()
    container = started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    h.ack(h.updates()[0])
    h.apply(h.agent.container_exited(container, 9, h.now()))  # killed by SIGKILL
    failed = h.updates()[-1]
    assert failed.state == "TASK_FAILED" and failed.reason == "REASON_EXECUTOR_TERMINATED"
    assert failed.source == "SOURCE_AGENT" and failed.uuid
    assert failed.message == "Executor terminated by signal SIGKILL"
    assert h.closed == [container]
    h.check()
    h.ack(failed)
    assert FID not in h.agent.frameworks
    h.check()


def test_custom_executor_gets_tasks_and_its_exit_is_reported():
    h = Harness()
    h.register()
    run(h, custom_task("t1"))
    (launch,) = h.launched.values()
    assert launch.argv == ("/bin/sh", "-c", "./my-executor --flag")
    assert launch.env["FOO"] == "bar" and launch.env["MESOS_EXECUTOR_ID"] == "exec1"
    run(h, custom_task("t2"))  # same executor: queued, no second container
    assert len(h.launched) == 1
    assert h.subscribe("exec1").status == 200
    assert h.events("c0") == ["SUBSCRIBED", "LAUNCH", "LAUNCH"]
    run(h, custom_task("t3"))  # executor running: delivered at once
    assert h.events("c0")[-1] == "LAUNCH"
    h.apply(h.agent.master_disconnected(h.now()))
    h.apply(h.agent.master_connected(h.now()))
    register = h.sent(internal.RegisterAgent)[-1]
    assert [e.executor_id for e in register.executors] == [ID("exec1")]
    assert {t.executor_id for t in register.tasks} == {ID("exec1")}
    h.master(internal.AgentReregistered(agent_id=ID(AID), master_id="M"))
    h.apply(h.agent.container_exited("c0", 256, h.now()))
    (exited,) = h.sent(internal.ExecutorExited)
    assert exited.executor_id == ID("exec1") and exited.status == 256
    assert [u.message for u in h.updates()] == ["Executor exited with status 1"] * 3
    h.check()


def test_registration_timeout_destroys_and_fails_tasks():
    h = Harness(executor_registration_timeout=2.0)
    h.register()
    run(h, command_task("t1"))
    h.advance(1.9)
    assert not h.destroyed
    h.advance(0.2)
    assert [d.container_id for d in h.destroyed] == ["c0"]
    h.apply(h.agent.container_exited("c0", 15, h.now()))
    (failed,) = h.updates()
    assert failed.state == "TASK_FAILED"
    assert failed.reason == "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
    h.check()


def test_launch_failure_fails_task():
    h = Harness()
    h.register()
    run(h, command_task("t1"))
    h.apply(h.agent.container_failed("c0", "No such file", h.now()))
    (failed,) = h.updates()
    assert failed.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert "No such file" in (failed.message or "")
    h.check()


def test_stream_loss_without_checkpoint_shuts_executor_down_after_grace():
    h = Harness(executor_shutdown_grace_period=3.0)
    container = started(h)
    h.apply(h.agent.executor_disconnected(container, h.now()))
    h.advance(2.9)
    assert not h.destroyed
    h.advance(0.2)
    assert [d.container_id for d in h.destroyed] == [container]
    h.check()


def test_stream_loss_with_checkpoint_allows_resubscribe():
    h = Harness()
    h.register()
    run(h, command_task("t1"), framework(checkpoint=True))
    assert h.subscribe("t1").status == 200
    h.apply(h.agent.executor_disconnected("c0", h.now()))
    h.advance(60)
    assert not h.destroyed
    unacked = {
        "status": {
            "task_id": {"value": "t1"},
            "state": "TASK_RUNNING",
            "source": "SOURCE_EXECUTOR",
            "uuid": fresh_uuid(99),
        }
    }
    assert h.subscribe("t1", unacknowledged_updates=[unacked]).status == 200
    assert [u.state for u in h.updates()] == ["TASK_RUNNING"]
    assert h.events("c0") == ["SUBSCRIBED", "LAUNCH", "SUBSCRIBED", "ACKNOWLEDGED"]
    h.check()


# -- frameworks and the agent ----------------------------------------------------------------


def test_shutdown_framework_shuts_executors_down_and_drops_updates():
    h = Harness(executor_shutdown_grace_period=5.0)
    container = started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    run(h, command_task("t2"))  # not subscribed yet: destroyed at once
    h.master(internal.ShutdownFramework(ID(FID)))
    assert h.events(container)[-1] == "SHUTDOWN"
    assert [d.container_id for d in h.destroyed] == ["c1"]
    assert not h.agent.streams
    h.update("t1", "t1", "TASK_KILLED")  # the executor obeys; acked but not forwarded
    assert h.events(container)[-1] == "ACKNOWLEDGED"
    assert len(h.updates()) == 1
    h.advance(5.1)
    assert [d.container_id for d in h.destroyed] == ["c1", container]
    h.apply(h.agent.container_exited(container, 0, h.now()))
    h.apply(h.agent.container_exited("c1", 9, h.now()))
    assert FID not in h.agent.frameworks and len(h.updates()) == 1
    assert not h.sent(internal.ExecutorExited)
    h.check()


def test_graceful_shutdown_unregisters_and_destroys_everything():
    h = Harness()
    started(h)
    run(h, command_task("t2"))
    h.apply(h.agent.shutdown(h.now()))
    assert h.sent(internal.UnregisterAgent)
    assert sorted(d.container_id for d in h.destroyed) == ["c0", "c1"]
    h.update("t1", "t1", "TASK_KILLED")
    assert not h.updates()  # nothing more goes to the master
    h.check()


def test_shutdown_agent_from_master_stops():
    h = Harness()
    started(h)
    h.master(internal.ShutdownAgent(message="marked gone"))
    assert h.stopped == ["marked gone"] and h.destroyed
    assert not h.sent(internal.UnregisterAgent)
    h.check()


def test_messages_are_relayed_both_ways():
    h = Harness()
    container = started(h)
    h.master(internal.FrameworkToExecutor(ID(FID), ID("t1"), "aGk="))
    assert h.to_executor[container][-1] == {"type": "MESSAGE", "message": {"data": "aGk="}}
    reply = h.call(
        {
            "type": "MESSAGE",
            "framework_id": {"value": FID},
            "executor_id": {"value": "t1"},
            "message": {"data": "eW8="},
        }
    )
    assert reply.status == 202
    (relayed,) = h.sent(internal.ExecutorToFramework)
    assert relayed.data == "eW8=" and relayed.executor_id == ID("t1")
    h.check()


def test_invalid_task_gets_task_error():
    h = Harness()
    h.register()
    bad = decode(
        encode_json({"name": "x", "task_id": {"value": "t1"}, "agent_id": {"value": AID}}), TaskInfo
    )
    run(h, bad)
    (error,) = h.updates()
    assert error.state == "TASK_ERROR" and error.reason == "REASON_TASK_INVALID"
    assert not h.launched
    h.ack(error)
    assert FID not in h.agent.frameworks
    h.check()


def test_task_group_is_launched_and_killed_together():
    h = Harness()
    h.register()
    executor = decode(b'{"executor_id":{"value":"g1"},"type":"DEFAULT"}', internal.ExecutorInfo)
    group = internal.TaskGroupInfo(tasks=[command_task("a"), command_task("b")])
    h.master(internal.RunTaskGroup(framework=framework(), executor=executor, task_group=group))
    (launch,) = h.launched.values()
    assert launch.argv == ("python", "-m", "butte.agent.executor.command")
    h.master(internal.KillTask(ID(FID), ID("b")))
    assert sorted(u.task_id.value for u in h.updates()) == ["a", "b"]
    assert all(u.state == "TASK_KILLED" for u in h.updates())
    message = "A task within the task group was killed before delivery to the executor"
    assert {u.message for u in h.updates()} == {message}  # Mesos' Slave::kill words
    assert h.destroyed
    h.check()


def test_task_group_delivered_as_launch_group():
    h = Harness()
    h.register()
    executor = decode(b'{"executor_id":{"value":"g1"},"type":"DEFAULT"}', internal.ExecutorInfo)
    group = internal.TaskGroupInfo(tasks=[command_task("a"), command_task("b")])
    h.master(internal.RunTaskGroup(framework=framework(), executor=executor, task_group=group))
    h.subscribe("g1")
    event = h.to_executor["c0"][-1]
    assert event["type"] == "LAUNCH_GROUP"
    assert [t.task_id.value for t in event["launch_group"]["task_group"]["tasks"]] == ["a", "b"]
    h.check()


# -- executor API validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        ({"uuid": None}, 400, "uuid"),
        ({"uuid": "bm90LTE2"}, 400, "16 bytes"),
        ({"uuid": "%%%"}, 400, "base64"),
        ({"source": "SOURCE_MASTER"}, 400, "source"),
        ({"source": None}, 400, "source"),
        ({"state": "TASK_STAGING"}, 400, "TASK_STAGING"),
        ({"state": "TASK_BOGUS"}, 400, "Unknown task state"),
        ({"executor_id": {"value": "other"}}, 400, "does not match"),
    ],
)
def test_bad_updates_are_rejected(status, code, text):
    h = Harness()
    started(h)
    body = {
        "task_id": {"value": "t1"},
        "state": "TASK_RUNNING",
        "source": "SOURCE_EXECUTOR",
        "uuid": fresh_uuid(5),
    }
    body.update(status)
    body = {k: v for k, v in body.items() if v is not None}
    reply = h.call(
        {
            "type": "UPDATE",
            "framework_id": {"value": FID},
            "executor_id": {"value": "t1"},
            "update": {"status": body},
        }
    )
    assert reply.status == code and text in reply.message
    assert not h.updates()
    h.check()


def test_an_executor_message_whose_data_is_no_base64_is_refused():
    """Mesos: 'Failed to base64 decode bytes field' (400); valid data goes on."""
    h = Harness()
    started(h)
    ids = {"framework_id": {"value": FID}, "executor_id": {"value": "t1"}}
    bad = h.call({"type": "MESSAGE", **ids, "message": {"data": "not base64!!"}})
    assert bad.status == 400 and "Failed to base64 decode bytes field 'data'" in bad.message
    assert h.call({"type": "MESSAGE", **ids, "message": {"data": "aGk="}}).status == 202


def test_calls_for_unknown_or_unsubscribed_executors_are_refused():
    h = Harness()
    h.register()
    run(h, command_task("t1"))
    assert h.update("t1", "t1", "TASK_RUNNING").status == 403
    other = {"type": "MESSAGE", "framework_id": {"value": "nope"}, "executor_id": {"value": "t1"}}
    other["message"] = {"data": "aGk="}
    assert h.call(other).status == 400
    other["framework_id"] = {"value": FID}
    other["executor_id"] = {"value": "nope"}
    assert h.call(other).status == 400
    # A HEARTBEAT is answered before any id is looked at, as Mesos' agent does (libmesos'
    # executor driver may send dummy ids in it).
    other = {"type": "HEARTBEAT", "framework_id": {"value": "x"}, "executor_id": {"value": "y"}}
    assert h.call(other).status == 202
    h.subscribe("t1")
    no_payload = {"type": "UPDATE", "framework_id": {"value": FID}, "executor_id": {"value": "t1"}}
    assert h.call(no_payload).status == 400
    h.update("t1", "t1", "TASK_FINISHED")
    reply = h.update("t1", "t1", "TASK_RUNNING")
    assert reply.status == 400 and "TASK_FINISHED" in reply.message
    h.check()


def test_report_all_executor_exits_switch(monkeypatch):
    monkeypatch.setattr(machine_module, "REPORT_COMMAND_EXECUTOR_EXITS", True)
    h = Harness()
    container = started(h)
    h.apply(h.agent.container_exited(container, 0, h.now()))
    assert h.sent(internal.ExecutorExited)
    h.check()


# -- random event sequences ------------------------------------------------------------------


def test_random_event_sequences_keep_invariants():
    for seed in range(30):
        rng = random.Random(seed)
        h = Harness(status_update_retry_interval_min=1.0, executor_registration_timeout=5.0)
        h.register()
        states = [
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_KILLING",
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
        ]
        for _step in range(150):
            action = rng.randrange(11)
            tid = f"t{rng.randrange(6)}"
            if action == 0:
                run(h, command_task(tid))
            elif action == 1:
                h.master(internal.KillTask(ID(FID), ID(tid)))
            elif action == 2:
                h.subscribe(tid)
            elif action in (3, 4):
                h.update(tid, tid, rng.choice(states))
            elif action == 5 and h.updates():
                h.ack(rng.choice(h.updates()))
            elif action == 6 and h.launched:
                cid = rng.choice(list(h.launched))
                h.apply(h.agent.container_exited(cid, rng.choice([0, 9, 256]), h.now()))
            elif action == 7:
                h.advance(rng.random() * 3)
            elif action == 8:
                h.apply(h.agent.master_disconnected(h.now()))
                h.apply(h.agent.master_connected(h.now()))
                h.master(internal.AgentReregistered(agent_id=ID(AID), master_id="M"))
            elif action == 9 and h.launched:
                h.apply(h.agent.executor_disconnected(rng.choice(list(h.launched)), h.now()))
            elif action == 10 and rng.random() < 0.1:
                h.master(internal.ShutdownFramework(ID(FID)))
            h.check()

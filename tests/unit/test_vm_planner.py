"""The VM scheduler's pure parts: the planner (butte.frameworks.vm.planner) and the guest
decisions of the VM executor (butte.frameworks.vm.guest)."""

from __future__ import annotations

import base64
import json

import pytest

from butte.core import task_states as ts
from butte.core.resources import Resources
from butte.frameworks.vm import guest
from butte.frameworks.vm import planner as plan

KERNEL = "/boot/vmlinuz"
LAUNCH = "REASON_CONTAINER_LAUNCH_FAILED"


def offer(oid: str, cpus: float = 4, mem: float = 2048, agent: str = "a1") -> dict:
    return {
        "id": {"value": oid},
        "agent_id": {"value": agent},
        "hostname": "h1",
        "url": {"address": {"hostname": "h1", "ip": "10.0.0.1", "port": 5051}},
        "resources": Resources.scalars(cpus=cpus, mem=mem).to_json("pre", allocation_role="*"),
    }


def of_type(effects: list, kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]


def update(
    task_id: str, state: str, message: str = "", labels: dict | None = None, reason: str = ""
) -> dict:
    status = {"task_id": {"value": task_id}, "state": state, "message": message}
    if reason:
        status["reason"] = reason
    if labels:
        status["labels"] = {"labels": [{"key": k, "value": v} for k, v in labels.items()]}
    return status


def running(p: plan.VmPlanner, name: str = "web", **extra) -> plan.Vm:
    p.create({"name": name, "kernel": KERNEL, "initrd": "file:///i.img", **extra})
    (launch,) = of_type(p.on_offers([offer(f"o-{name}")]), plan.Launch)
    p.on_update(update(launch.task["task_id"]["value"], ts.RUNNING, labels={"accel": "tcg"}))
    return p.get(name)


def test_create_launches_a_vm_task_with_its_executor_and_guest_files() -> None:
    p = plan.VmPlanner(executor_argv=("py", "-m", "butte.frameworks.vm.executor"))
    vm, effects = p.create({"name": "web", "cpus": 2, "mem": 512, "kernel": KERNEL,
                            "initrd": "file:///i.img", "cmdline": "quiet"})  # fmt: skip
    assert vm.state == "pending" and of_type(effects, plan.Persist)
    effects = p.on_offers([offer("small", cpus=1), offer("big")])
    (launch,) = of_type(effects, plan.Launch)
    assert launch.offer_ids == ("big",)
    task = launch.task
    assert Resources.from_json(task["resources"]) == Resources.scalars(cpus=2, mem=512)
    assert task["executor"]["command"]["arguments"] == ["py", "-m", "butte.frameworks.vm.executor"]
    uris = {u["output_file"]: u["value"] for u in task["executor"]["command"]["uris"]}
    assert uris == {"kernel": KERNEL, "initrd": "file:///i.img"}
    config = json.loads(base64.b64decode(task["data"]))
    assert config == {"kernel": "kernel", "initrd": "initrd", "cmdline": "quiet", "accel": "auto"}
    assert of_type(effects, plan.Decline)[0].offer_ids == ("small",)
    assert of_type(effects, plan.Suppress)  # nothing else waits
    assert p.get("web").agent_address == "10.0.0.1:5051"
    # The executor's own resources must fit too.
    p2 = plan.VmPlanner()
    p2.create({"name": "x", "cpus": 1, "mem": 256, "kernel": KERNEL})
    assert not of_type(p2.on_offers([offer("o", cpus=1, mem=256)]), plan.Launch)


@pytest.mark.parametrize(
    ("state", "vm_state", "desired"),
    [
        (ts.FINISHED, "shut off", "stopped"),
        (ts.FAILED, "crashed", "stopped"),
        (ts.ERROR, "failed", "stopped"),
        (ts.LOST, "pending", "running"),
    ],
)
def test_task_ends_map_to_vm_states(state: str, vm_state: str, desired: str) -> None:
    p = plan.VmPlanner()
    vm = running(p)
    assert vm.state == "running" and vm.accel == "tcg"
    effects = p.on_update(update(vm.task_id or "", state, "why"))
    assert (vm.state, vm.desired, vm.task_id, vm.message) == (vm_state, desired, None, "why")
    assert of_type(effects, plan.Persist)


def test_a_guest_that_never_ran_has_failed_not_crashed() -> None:
    p = plan.VmPlanner()
    vm = running(p)
    launched = p.on_update(update(vm.task_id or "", ts.FAILED, "Failed to fetch", reason=LAUNCH))
    assert (vm.state, vm.message) == ("failed", "Failed to fetch")
    assert of_type(launched, plan.Persist)
    p.start("web")
    (launch,) = of_type(p.on_offers([offer("o2")]), plan.Launch)
    assert vm.state == "starting"
    p.on_update(update(launch.task["task_id"]["value"], ts.FAILED, "QEMU exited with status 1"))
    assert vm.state == "failed"


def test_a_lost_guest_is_booted_again() -> None:
    p = plan.VmPlanner()
    vm = running(p)
    p.on_update(update(vm.task_id or "", ts.LOST))
    (launch,) = of_type(p.on_offers([offer("o2", agent="a2")]), plan.Launch)
    assert launch.task["task_id"]["value"] == "vm-web-2" and vm.agent_id == "a2"


def test_stop_restart_start_delete() -> None:
    p = plan.VmPlanner()
    vm = running(p)
    _, effects = p.restart("web")
    (message,) = of_type(effects, plan.Message)
    assert json.loads(message.data) == {"action": "restart"}
    assert message.executor_id == vm.executor_id and vm.state == "running"
    _, effects = p.stop("web", grace=2.0)
    assert of_type(effects, plan.Kill)[0] == plan.Kill("vm-web-1", "a1", 2.0)
    assert vm.state == "stopping"
    with pytest.raises(plan.VmError) as refused:
        p.restart("web")
    assert refused.value.status == 409
    p.on_update(update("vm-web-1", ts.KILLED))
    assert (vm.state, vm.desired) == ("stopped", "stopped")
    _, effects = p.start("web")
    assert vm.state == "pending" and of_type(effects, plan.Revive)
    with pytest.raises(plan.VmError):
        p.start("web")  # pending already
    p.on_offers([offer("o3")])
    _, effects = p.delete("web")
    assert of_type(effects, plan.Kill)[0].task_id == "vm-web-2" and "web" in p.vms
    p.on_update(update("vm-web-2", ts.KILLED))
    assert "web" not in p.vms
    with pytest.raises(plan.VmError) as missing:
        p.get("web")
    assert missing.value.status == 404


def test_a_vm_that_powers_off_while_stopping_is_stopped() -> None:
    p = plan.VmPlanner()
    vm = running(p)
    p.stop("web")
    p.on_update(update(vm.task_id or "", ts.FINISHED))
    assert vm.state == "stopped"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "UPPER", "kernel": KERNEL}, "'name'"),
        ({"name": "a" * 64, "kernel": KERNEL}, "'name'"),
        ({"name": "a", "kernel": "vmlinuz"}, "absolute path"),
        ({"name": "a", "kernel": "ftp://x/k"}, "absolute path"),
        ({"name": "a", "kernel": KERNEL, "cpus": True}, "'cpus'"),
        ({"name": "a", "kernel": KERNEL, "cpus": 1.5}, "whole number"),
        ({"name": "a", "kernel": KERNEL, "mem": 8}, "'mem'"),
        ({"name": "a", "kernel": KERNEL, "cmdline": "a\nb"}, "'cmdline'"),
        ({"name": "a", "kernel": KERNEL, "extra": 1}, "unknown fields"),
        ("x", "JSON object"),
    ],
)
def test_bad_create_requests(body: object, words: str) -> None:
    with pytest.raises(plan.VmError) as refused:
        plan.VmPlanner().create(body)
    assert refused.value.status == 400 and words in refused.value.message


def test_duplicate_names_are_refused_and_state_round_trips() -> None:
    p = plan.VmPlanner()
    running(p)
    with pytest.raises(plan.VmError) as dup:
        p.create({"name": "web", "kernel": KERNEL})
    assert dup.value.status == 409
    p.framework_id = "fw-1"
    restored = plan.VmPlanner()
    restored.restore(json.loads(json.dumps(p.snapshot())))
    assert restored.snapshot() == p.snapshot()
    effects = restored.on_subscribed("fw-1")
    assert of_type(effects, plan.Reconcile)[0].tasks == (("vm-web-1", "a1"),)


def test_qemu_command_line() -> None:
    spec = guest.guest_spec("web", {"kernel": "kernel", "initrd": "initrd", "disk": "d.qcow2",
                                    "cmdline": "quiet"}, {"cpus": 2.5, "mem": 300})  # fmt: skip
    argv = guest.qemu_argv(spec, "tcg")
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "300"
    assert argv[argv.index("-accel") + 1] == "tcg" and "-cpu" not in argv
    assert argv[argv.index("-append") + 1] == "console=ttyS0 quiet"
    assert "file=d.qcow2,if=virtio,format=qcow2" in argv
    assert "-cpu" in guest.qemu_argv(spec, "kvm")
    assert "-no-reboot" in guest.kvm_probe_argv("kernel")


@pytest.mark.parametrize(
    ("config", "resources"),
    [
        ({"initrd": "i"}, {"cpus": 1, "mem": 256}),
        ({"kernel": "k", "accel": "hvf"}, {"cpus": 1, "mem": 256}),
        ({"kernel": "k", "bogus": 1}, {"cpus": 1, "mem": 256}),
        ({"kernel": "k"}, {"cpus": 1, "mem": 16}),
        ("kernel", {"cpus": 1, "mem": 256}),
    ],
)
def test_bad_guest_descriptions(config: object, resources: dict) -> None:
    with pytest.raises(guest.GuestConfigError):
        guest.guest_spec("x", config, resources)


def test_guest_ends_map_to_task_states() -> None:
    assert guest.end_of_guest(0, False, False) == (ts.FINISHED, "guest powered off")
    assert guest.end_of_guest(0, True, False)[0] == ts.KILLED
    assert guest.end_of_guest(-9, True, False)[0] == ts.KILLED
    assert guest.end_of_guest(1, False, False)[0] == ts.FAILED
    assert "signal 9" in guest.end_of_guest(-9, False, False)[1]
    assert guest.end_of_guest(0, True, True) == (ts.FAILED, "guest kernel panic (see console.log)")

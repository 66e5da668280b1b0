"""gpu/nvidia with a real agent process, on both cgroup versions.

* With a stand-in for NVML (a ``pynvml`` module on the agent's path reporting two GPUs of
  minors 0 and 1) and device nodes of the NVIDIA major made in the test's directory: a task
  with ``gpus: 1`` may open its own node and not the other GPU's, a task without GPUs may
  open neither, and an agent killed and restarted takes the running task's GPU back from its
  group. The kernel decides: opening a node the task may not open fails with EPERM. Runs
  with the v1 devices controller and with the cgroup v2 device filter wherever each exists
  (under ``CI=true`` both must).
* On a real GPU: the agent finds the devices through NVML and offers them, a task with
  ``gpus: 1`` can open its device node and a task without GPUs cannot; where PyTorch is
  installed, CUDA computes on the GPU in the first and finds no GPU in the second. Skips (GPUs
  are optional hardware) where NVML finds no GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_agent_process import (
    AID,
    FID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    run_scenario,
    sandbox,
    wait_for,
)
from test_agent_recovery import CHECKPOINTING, fixed_port, reregistrations
from test_isolation import _rmdir_eventually, terminal

from butte.testing.require import require

pytestmark = pytest.mark.integration

FAKE_NVML = '''"""Stands in for nvidia-ml-py in tests/integration/test_gpu.py: two GPUs."""


def nvmlInit():
    pass


def nvmlDeviceGetCount():
    return 2


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetUUID(handle):
    return f"GPU-fake-{handle}"


def nvmlDeviceGetName(handle):
    return "Fake GPU"


def nvmlDeviceGetMinorNumber(handle):
    return handle
'''

# Prints, for each path it is given, "denied" where device control refuses to open it (EPERM)
# and "allowed" otherwise (opened, or refused by the driver: ENXIO where there is none).
PROBE = """import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        print("allowed")
    except OSError as e:
        print("denied" if e.errno == errno.EPERM else "allowed")
"""


# Prints the number of GPUs CUDA sees and, with one, the sum of four ones computed on it.
CUDA_PROBE = """import torch
count = torch.cuda.device_count() if torch.cuda.is_available() else 0
print(count, float(torch.ones(4, device="cuda").sum()) if count else "none")
"""


def hierarchies() -> dict[str, str]:
    """The cgroup hierarchies gpu/nvidia can use here, by version: v1 with the devices and
    freezer controllers under /sys/fs/cgroup, and a v2 one (the system's, or beside v1)."""
    found = {}
    v1 = Path("/sys/fs/cgroup")
    if (v1 / "devices/devices.allow").is_file() and (v1 / "freezer/cgroup.procs").is_file():
        found["v1"] = str(v1)
    for v2 in (v1, v1 / "unified"):
        if (v2 / "cgroup.controllers").is_file():
            found["v2"] = str(v2)
            break
    return found


def gpu_task(task_id: str, gpus: int, command: str) -> dict[str, Any]:
    resources = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]
    if gpus:
        resources.append({"name": "gpus", "type": "SCALAR", "scalar": {"value": gpus}})
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": resources,
        "command": {"value": command},
    }


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_gpu_tasks_open_only_their_devices_across_a_restart(tmp_path, monkeypatch, version):
    hierarchy = hierarchies().get(version)
    root_ok = os.geteuid() == 0
    require(None if hierarchy and root_ok else "root and this cgroup version", f"cgroup {version}")
    assert hierarchy is not None
    fake = tmp_path / "nvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_NVML)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), *sys.path]))
    dev = tmp_path / "dev"
    dev.mkdir()
    for minor in (0, 1):
        os.mknod(dev / f"gpu{minor}", 0o666 | 0o020000, os.makedev(195, minor))
    (tmp_path / "probe.py").write_text(PROBE)
    probe = f"{sys.executable} {tmp_path / 'probe.py'} {dev / 'gpu0'} {dev / 'gpu1'} > result"

    def opened(task_id: str) -> list[str] | None:
        result = sandbox(tmp_path, task_id) / "result"
        text = result.read_text() if result.exists() else ""
        return text.split() if text.count("\n") == 2 else None

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        register = master.of_type("REGISTER_AGENT")[0]
        gpus = [r for r in register["agent_info"]["resources"] if r["name"] == "gpus"]
        assert gpus[0]["scalar"]["value"] == 2
        for task_id, count, tail in (("one", 1, "; exec sleep 600"), ("none", 0, "")):
            task = gpu_task(task_id, count, probe + tail)
            await master.send({"type": "RUN_TASK", "framework": CHECKPOINTING, "task": task})
        assert await wait_for(lambda: opened("one"), "one's probe", 30) == ["allowed", "denied"]
        assert await wait_for(lambda: opened("none"), "none's probe", 30) == ["denied", "denied"]
        # The agent dies and comes back: "one" still holds GPU 0, so two are not free.
        await agent.kill()
        await agent.start()
        await wait_for(lambda: reregistrations(master), "re-registration", 30)
        task = gpu_task("two", 2, "true")
        await master.send({"type": "RUN_TASK", "framework": CHECKPOINTING, "task": task})
        refused = await wait_for(lambda: terminal(master, "two"), "two refused", 30)
        assert refused["state"] in ("TASK_FAILED", "TASK_ERROR"), refused
        assert "asked for 2 GPU(s), 1 free here" in refused["message"]
        task = gpu_task("other", 1, probe)
        await master.send({"type": "RUN_TASK", "framework": CHECKPOINTING, "task": task})
        assert await wait_for(lambda: opened("other"), "other's probe", 30) == ["denied", "allowed"]
        # "one" would outlive the agent (its framework checkpoints): it ends with the test.
        kill = {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "one"}}
        await master.send(kill)
        killed = await wait_for(lambda: terminal(master, "one"), "one killed", 30)
        assert killed["state"] == "TASK_KILLED"

    root = f"butte-gpu-{uuid.uuid4().hex[:8]}"
    flags = ("--isolation", "gpu/nvidia", "--cgroups_root", root)
    flags += ("--cgroups_hierarchy", hierarchy, *fixed_port())
    try:
        run_scenario(tmp_path, scenario, agent_flags=flags)
    finally:
        remove_groups(hierarchy, version, root)


def remove_groups(hierarchy: str, version: str, root: str) -> None:
    """Kills what a failed test left in the groups under ``root`` and removes them."""
    bases = [Path(hierarchy, c, root) for c in ("devices", "freezer")] if version == "v1" else []
    for base in bases or [Path(hierarchy, root)]:
        if not base.is_dir():
            continue
        for child in [c for c in base.iterdir() if c.is_dir()]:
            for pid in (child / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _rmdir_eventually(child)
        _rmdir_eventually(base)


def _gpus() -> list[int]:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [
            pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(i))
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    except Exception as e:  # noqa: BLE001 - whatever NVML says, there is no usable GPU
        pytest.skip(f"no NVIDIA GPU usable through NVML here: {e}")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_gpu_task_gets_its_device_and_others_get_none(tmp_path, version):
    minors = _gpus()
    if not minors:
        pytest.skip("NVML reports no GPU")
    hierarchy = hierarchies().get(version)
    if os.geteuid() != 0 or hierarchy is None:
        pytest.skip(f"needs root and a cgroup {version} hierarchy")
    node = f"/dev/nvidia{minors[0]}"
    # In a subshell: a failed redirection of ":" ends the shell that runs it.
    probe = f"(: < {node}) && echo open > result || echo denied > result"
    # Where PyTorch is at hand, CUDA itself: the task without GPUs unsets
    # CUDA_VISIBLE_DEVICES, so only the agent's device control keeps the GPU from it.
    cuda = importlib.util.find_spec("torch") is not None
    (tmp_path / "cuda.py").write_text(CUDA_PROBE)
    cuda_probe = f"env -u CUDA_VISIBLE_DEVICES {sys.executable} {tmp_path / 'cuda.py'} > cuda"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        register = master.of_type("REGISTER_AGENT")[0]
        gpus = [r for r in register["agent_info"]["resources"] if r["name"] == "gpus"]
        assert gpus and gpus[0]["scalar"]["value"] == len(minors)
        for task_id, count in (("with", 1), ("without", 0)):
            command = f"{probe}; echo $NVIDIA_VISIBLE_DEVICES > visible"
            if cuda:
                command += f"; {cuda_probe}"
            task = gpu_task(task_id, count, command)
            await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        for task_id in ("with", "without"):
            status = await wait_for(lambda t=task_id: terminal(master, t), task_id, 120)
            assert status["state"] == "TASK_FINISHED", status
        assert (sandbox(tmp_path, "with") / "result").read_text().strip() == "open"
        assert (sandbox(tmp_path, "without") / "result").read_text().strip() == "denied"
        assert (sandbox(tmp_path, "with") / "visible").read_text().startswith("GPU-")
        if cuda:
            assert (sandbox(tmp_path, "with") / "cuda").read_text().split() == ["1", "4.0"]
            assert (sandbox(tmp_path, "without") / "cuda").read_text().split() == ["0", "none"]

    root = f"butte-gpu-{uuid.uuid4().hex[:8]}"
    flags = ("--isolation", "gpu/nvidia", "--cgroups_root", root, "--cgroups_hierarchy", hierarchy)
    run_scenario(tmp_path, scenario, agent_flags=flags)

"""gpu/nvidia on a real GPU: the agent finds the devices through NVML and offers them, a task
with ``gpus: 1`` can open its device node and a task without GPUs cannot (devices cgroup).
Skips (GPUs are optional hardware) where NVML finds no GPU or the agent cannot run as root
with the cgroup v1 devices controller."""

from __future__ import annotations

import os
import uuid

import pytest
from test_agent_process import (
    AID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    run_scenario,
    sandbox,
    wait_for,
)

pytestmark = pytest.mark.integration


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


def test_gpu_task_gets_its_device_and_others_get_none(tmp_path):
    minors = _gpus()
    if not minors:
        pytest.skip("NVML reports no GPU")
    if os.geteuid() != 0 or not os.path.isfile("/sys/fs/cgroup/devices/devices.allow"):
        pytest.skip("needs root and the cgroup v1 devices controller")
    node = f"/dev/nvidia{minors[0]}"
    probe = f": < {node} && echo open > result || echo denied > result"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        register = master.of_type("REGISTER_AGENT")[0]
        gpus = [r for r in register["agent_info"]["resources"] if r["name"] == "gpus"]
        assert gpus and gpus[0]["scalar"]["value"] == len(minors)
        for task_id, count in (("with", 1), ("without", 0)):
            resources = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]
            if count:
                resources.append({"name": "gpus", "type": "SCALAR", "scalar": {"value": count}})
            task = {
                "name": task_id,
                "task_id": {"value": task_id},
                "agent_id": {"value": AID},
                "resources": resources,
                "command": {"value": f"{probe}; echo $NVIDIA_VISIBLE_DEVICES > visible"},
            }
            await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        for task_id in ("with", "without"):
            result = sandbox(tmp_path, task_id) / "result"
            await wait_for(lambda r=result: r.exists(), task_id, 30)
        assert (sandbox(tmp_path, "with") / "result").read_text().strip() == "open"
        assert (sandbox(tmp_path, "without") / "result").read_text().strip() == "denied"
        assert (sandbox(tmp_path, "with") / "visible").read_text().startswith("GPU-")

    root = f"butte-gpu-{uuid.uuid4().hex[:8]}"
    flags = ("--isolation", "gpu/nvidia", "--cgroups_root", root)
    run_scenario(tmp_path, scenario, agent_flags=flags)

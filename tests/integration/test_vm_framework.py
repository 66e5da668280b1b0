"""``butte vm`` against a real master and agent: real QEMU guests (a Debian kernel and a
busybox initramfs built here) booted by the VM executor.

The guest's init reads ``butte_test=`` from the kernel command line: ``poweroff`` prints a
line and powers off, ``panic`` exits (the kernel panics), anything else prints a line and
stays up. Guests boot under TCG (~5 s each, more on a loaded machine), so few are booted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import free_port
from butte.testing.require import require

pytestmark = pytest.mark.integration

CACHE = Path(os.environ.get("BUTTE_TEST_CACHE", "/var/cache/butte-test")) / "vm"
RESOURCES = "cpus:4;mem:2048;disk:1000;ports:[31000-31100]"
BOOT_TIMEOUT = 90.0

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mode=wait
for word in $(cat /proc/cmdline); do
  case "$word" in butte_test=*) mode="${word#butte_test=}" ;; esac
done
echo "butte-guest: hello mode=$mode"
case "$mode" in
  poweroff) poweroff -f ;;
  panic) exit 3 ;;
  *) echo "butte-guest: up"; while true; do sleep 3600; done ;;
esac
"""


def build_initramfs(directory: Path) -> Path:
    """A busybox initramfs (newc cpio, as the kernel wants it) with the init above."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    root = directory / "root"
    for sub in ("bin", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    names = subprocess.run(
        ["find", "."], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    image = directory / "initrd.img"
    with open(image, "wb") as out:
        subprocess.run(
            [busybox, "cpio", "-o", "-H", "newc"],
            cwd=root, input=names.encode(), stdout=out, stderr=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    return image


@pytest.fixture(scope="module")
def guest_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(kernel, initramfs); missing parts skip the test (fail under CI=true)."""
    missing = [p for p in ("qemu-system-x86_64",) if shutil.which(p) is None]
    require(", ".join(missing) + " not on PATH" if missing else None, "QEMU (qemu-system-x86)")
    busybox = shutil.which("busybox") or "/bin/busybox"
    has_cpio = (
        os.path.exists(busybox)
        and "cpio"
        in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    )
    require(None if has_cpio else "no busybox with cpio", "busybox-static")
    kernel = CACHE / "vmlinuz"
    require(
        None if kernel.exists() else f"{kernel} missing (scripts/test-deps/41-vm.sh fetches it)",
        "a Debian guest kernel",
    )
    return kernel, build_initramfs(tmp_path_factory.mktemp("guest"))


class VmService:
    """A running ``butte vm serve`` and calls to its REST API and CLI."""

    def __init__(self, master: str, work_dir: Path) -> None:
        self.master = master
        self.work_dir = work_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = work_dir / "vm-serve.log"

    def start(self) -> VmService:
        argv = [sys.executable, "-m", "butte.cli.main", "vm", "serve", "--master", self.master]
        argv += ["--http_port", str(self.port), "--work_dir", str(self.work_dir / "vmd")]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._up(), "the VM API answers", 30)
        return self

    def _up(self) -> bool:
        """Whether the service takes requests: it answers 503 to every change until it has
        subscribed to the master, and 400 to this bad one after (it creates nothing)."""
        try:
            self.call("POST", "/api/v1/vms", [])
        except urllib.error.HTTPError as e:
            return e.code == 400
        except OSError:
            return False
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def vm(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v1/vms/{name}")

    def console(self, name: str) -> str:
        return self.call("GET", f"/api/v1/vms/{name}/console")["data"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "butte.cli.main", "vm", *args]
        argv += ["--server", f"127.0.0.1:{self.port}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def wait_state(self, name: str, state: str, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        return wait_for(
            lambda: (vm := self.vm(name))["state"] == state and vm,
            f"VM {name} {state}",
            timeout,
            lambda: f"{self.vm(name)}\n{self.log.read_text()[-3000:]}",
        )

    def wait_console(self, name: str, text: str, count: int = 1) -> str:
        return wait_for(
            lambda: (c := self.console(name)).count(text) >= count and c,
            f"{count}x {text!r} on {name}'s console",
            BOOT_TIMEOUT,
            lambda: self.console(name)[-2000:],
        )


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    timeout: float,
    show: Callable[[], str] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except (OSError, urllib.error.HTTPError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{show() if show else ''}")
        time.sleep(0.25)


@pytest.fixture
def vm_service(cluster, tmp_path: Path) -> Iterator[VmService]:
    service = VmService(cluster.master_address, tmp_path).start()
    try:
        yield service
    finally:
        service.stop()


def _create(service: VmService, files: tuple[Path, Path], name: str, mode: str, **extra: Any):
    kernel, initrd = files
    body = {"name": name, "cpus": 1, "mem": 256, "kernel": str(kernel), "initrd": str(initrd)}
    body |= {"cmdline": f"quiet butte_test={mode}", "accel": "tcg", **extra}
    return service.call("POST", "/api/v1/vms", body)


def _task_states(cluster, task_id: str) -> list[str]:
    state = cluster.state()
    frameworks = state["frameworks"] + state["completed_frameworks"]
    return [
        t["state"]
        for f in frameworks
        for t in f["tasks"] + f["completed_tasks"]
        if t["id"] == task_id
    ]


@pytest.mark.cluster(agents=1, resources=RESOURCES)
def test_guest_lifecycle_restart_stop_start_delete_and_server_failover(
    cluster, vm_service: VmService, guest_files: tuple[Path, Path]
) -> None:
    # accel auto: the executor probes KVM (with a timeout) and falls back to TCG where it
    # does not boot guests; the accelerator it chose is reported.
    _create(vm_service, guest_files, "web", "wait", accel="auto")
    vm = vm_service.wait_state("web", "running")
    assert vm["spec"] == {**vm["spec"], "cpus": 1, "mem": 256}
    task_id = vm["task_id"]
    vm_service.wait_console("web", "butte-guest: up")
    assert vm_service.vm("web")["accel"] in ("kvm", "tcg")

    # Restart resets the guest in place: it boots again under the same task.
    vm_service.call("POST", "/api/v1/vms/web/restart", {})
    vm_service.wait_console("web", "butte-guest: up", count=2)
    vm = vm_service.vm("web")
    assert vm["state"] == "running" and vm["task_id"] == task_id
    assert _task_states(cluster, task_id) == ["TASK_RUNNING"]

    # The server fails over: a new process re-subscribes with the stored framework id and
    # still knows the running guest, which never stopped.
    framework_id = cluster.state()["frameworks"][0]["id"]
    vm_service.stop(signal.SIGKILL)
    vm_service.start()
    wait_for(
        lambda: [f["id"] for f in cluster.state()["frameworks"] if f["active"]] == [framework_id],
        "the framework re-subscribed with its id",
        30,
    )
    vm = vm_service.vm("web")
    assert vm["state"] == "running" and vm["task_id"] == task_id

    # The agent restarts (SIGKILL): the checkpointed executor keeps its guest, re-subscribes
    # to the recovered agent, and later obeys the stop below through it.
    agent_id = vm["agent_id"]
    cluster.agents[0].kill()
    cluster.agents[0].restart()
    wait_for(
        lambda: any(a["id"] == agent_id and a["active"] for a in cluster.state()["slaves"]),
        "the agent re-registered",
        60,
    )
    assert "butte-guest: up" in vm_service.console("web")
    assert _task_states(cluster, task_id) == ["TASK_RUNNING"]

    # The CLI against the same API.
    listed = vm_service.cli("list")
    assert listed.returncode == 0 and "web" in listed.stdout and "running" in listed.stdout
    console = vm_service.cli("console", "web")
    assert console.returncode == 0 and "butte-guest: hello mode=wait" in console.stdout

    # This guest has no ACPI daemon: after the power button's grace it is switched off.
    stopped = vm_service.cli("stop", "web", "--grace", "1")
    assert stopped.returncode == 0, stopped.stderr
    vm = vm_service.wait_state("web", "stopped", timeout=60)
    assert vm["task_id"] is None
    assert _task_states(cluster, task_id) == ["TASK_KILLED"]
    # Stopping a stopped VM is fine; restarting one is refused.
    refused = vm_service.cli("restart", "web")
    assert refused.returncode == 1 and "only a running VM can restart" in refused.stderr

    # Start boots it again as a new task; delete stops and forgets it.
    vm_service.call("POST", "/api/v1/vms/web/start", {})
    vm = vm_service.wait_state("web", "running")
    assert vm["task_id"] not in (None, task_id) and vm["generation"] == 2
    vm_service.call("DELETE", "/api/v1/vms/web")
    wait_for(lambda: vm_service.call("GET", "/api/v1/vms")["vms"] == [], "VM deleted", 60)
    assert _task_states(cluster, vm["task_id"]) == ["TASK_KILLED"]


@pytest.mark.cluster(agents=1, resources=RESOURCES)
def test_guest_power_off_finishes_and_kernel_panic_fails(
    cluster, vm_service: VmService, guest_files: tuple[Path, Path]
) -> None:
    _create(vm_service, guest_files, "once", "poweroff")
    _create(vm_service, guest_files, "broken", "panic")
    once = vm_service.wait_state("once", "shut off")
    assert once["message"] == "guest powered off"
    assert "butte-guest: hello mode=poweroff" in vm_service.console("once")
    broken = vm_service.wait_state("broken", "crashed")
    assert "kernel panic" in broken["message"]
    assert "Kernel panic - not syncing" in vm_service.console("broken")
    states = {f"vm-{n}-1": _task_states(cluster, f"vm-{n}-1") for n in ("once", "broken")}
    assert states == {"vm-once-1": ["TASK_FINISHED"], "vm-broken-1": ["TASK_FAILED"]}


@pytest.mark.cluster(agents=1, resources=RESOURCES)
def test_bad_requests_are_refused(cluster, vm_service: VmService) -> None:
    """No guest is booted here: every request is refused before it could be."""
    cases = [
        ({"name": "Bad_Name", "kernel": "/k"}, "'name'"),
        ({"name": "a", "kernel": "relative/path"}, "absolute path"),
        ({"name": "a", "kernel": "/k", "cpus": 0.5}, "'cpus'"),
        ({"name": "a", "kernel": "/k", "mem": 10**9}, "'mem'"),
        ({"name": "a", "kernel": "/k", "accel": "xen"}, "'accel'"),
        ({"name": "a", "kernel": "/k", "gpu": 1}, "unknown fields"),
        ({"name": "a"}, "'kernel'"),
        ([1, 2], "JSON object"),
    ]
    for body, words in cases:
        with pytest.raises(urllib.error.HTTPError) as caught:
            vm_service.call("POST", "/api/v1/vms", body)
        assert caught.value.code == 400
        assert words in json.loads(caught.value.read())["error"], body
    for method, path in (
        ("GET", "/api/v1/vms/nope"),
        ("POST", "/api/v1/vms/nope/stop"),
        ("DELETE", "/api/v1/vms/nope"),
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            vm_service.call(method, path, {} if method == "POST" else None)
        assert caught.value.code == 404
    request = urllib.request.Request(
        f"http://127.0.0.1:{vm_service.port}/api/v1/vms", b"{not json", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert vm_service.call("GET", "/api/v1/vms") == {"vms": []}

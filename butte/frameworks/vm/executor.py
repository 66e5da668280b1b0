"""The VM executor: a custom executor (v1 executor HTTP API, docs/protocol.md) that runs one
guest per task with QEMU.

The agent starts it as ``python -m butte.frameworks.vm.executor`` with the Mesos executor
environment, after fetching the task's kernel/initrd/disk into the sandbox. Flow::

    SUBSCRIBE -> SUBSCRIBED, LAUNCH -> TASK_STARTING -> (KVM probe) -> qemu -> TASK_RUNNING
    MESSAGE {"action": "restart"} -> QMP system_reset -> TASK_RUNNING "guest reset"
    KILL -> QMP system_powerdown, QMP quit after the grace period -> TASK_KILLED
    QEMU exits -> TASK_FINISHED / TASK_FAILED (`butte.frameworks.vm.guest.end_of_guest`)
    ACKNOWLEDGED of the terminal update (or SHUTDOWN) -> exit

KVM is used when ``/dev/kvm`` opens and a probe guest boots under it within
`KVM_PROBE_SECONDS` (tried once, when the executor starts its guest); otherwise TCG. The
console goes to ``console.log`` in the sandbox, QEMU's own messages to ``qemu.log``.

If the agent goes away, the guest is stopped and the executor exits, unless the framework
checkpoints (``MESOS_CHECKPOINT``): then it keeps the guest and re-subscribes (resending
unacknowledged updates) until ``MESOS_RECOVERY_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

import aiohttp

from butte.core import task_states
from butte.core.codec import RecordIOReader
from butte.frameworks.vm import guest

log = logging.getLogger("butte.vm.executor")

EXECUTOR_PATH = "/api/v1/executor"
DEFAULT_GRACE = 3.0
ACK_FAILSAFE = 30.0


def _duration(text: str | None, default: float) -> float:
    """Seconds of a Mesos duration (``15mins``, ``10secs``, ``500ms``)."""
    if not text:
        return default
    units = (("mins", 60.0), ("secs", 1.0), ("ms", 0.001), ("hrs", 3600.0), ("ns", 1e-9))
    for unit, scale in units:
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * scale
            except ValueError:
                return default
    try:
        return float(text)
    except ValueError:
        return default


def scalar_resources(task: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in task.get("resources", []):
        if r.get("type", "SCALAR") == "SCALAR" and "scalar" in r:
            out[r["name"]] = out.get(r["name"], 0.0) + float(r["scalar"]["value"])
    return out


async def probe_kvm(kernel: str, timeout: float = guest.KVM_PROBE_SECONDS) -> str:
    """ "kvm" if a KVM guest boots ``kernel`` to its end within ``timeout``; else "tcg"."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return "tcg"
    os.close(fd)
    process = await asyncio.create_subprocess_exec(
        *guest.kvm_probe_argv(kernel),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout):
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return "tcg"
    return "kvm" if code == 0 else "tcg"


class Qmp:
    """QEMU's QMP monitor over its stdin/stdout: commands, answers, and guest events."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "event" in message:
                await self.events.put(message)
            elif "return" in message or "error" in message:
                await self._answers.put(message)

    async def execute(self, command: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """Runs a QMP command; its answer, or None if QEMU is gone or did not answer."""
        async with self._lock:
            if self.process.returncode is not None or self.process.stdin is None:
                return None
            try:
                self.process.stdin.write(json.dumps({"execute": command}).encode() + b"\n")
                await self.process.stdin.drain()
                async with asyncio.timeout(timeout):
                    return await self._answers.get()
            except (OSError, TimeoutError):
                return None

    def close(self) -> None:
        self._reader.cancel()


class VmExecutor:
    """One executor process; see the module docstring."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.endpoint = environ["MESOS_AGENT_ENDPOINT"]
        self.framework_id = environ["MESOS_FRAMEWORK_ID"]
        self.executor_id = environ["MESOS_EXECUTOR_ID"]
        self.token = environ.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", "")
        self.sandbox = environ.get("MESOS_SANDBOX") or os.getcwd()
        self.checkpoint = environ.get("MESOS_CHECKPOINT") == "1"
        self.recovery_timeout = _duration(environ.get("MESOS_RECOVERY_TIMEOUT"), 900.0)
        self.qemu_binary = environ.get("BUTTE_VM_QEMU", "qemu-system-x86_64")
        self.task: dict[str, Any] | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.qmp: Qmp | None = None
        self.stopping = False
        self.panicked = False
        self.unacked: dict[str, dict[str, Any]] = {}  # uuid -> update
        self.terminal_uuid: str | None = None
        self.done = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.accel = ""

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}{EXECUTOR_PATH}"

    # -- the agent connection ----------------------------------------------------------------

    def _call(self, kind: str, **payload: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "framework_id": {"value": self.framework_id},
            "executor_id": {"value": self.executor_id},
            **payload,
        }

    async def run(self) -> int:
        # With --authenticate_http_executors the agent wants the executor's token every call.
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(sock_connect=5),
            headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
        )
        try:
            while not self.done.is_set():
                connected = await self._subscribe_and_serve()
                if self.done.is_set():
                    break
                if not self.checkpoint or self.task is None:
                    log.warning("lost the agent: stopping the guest")
                    await self._stop_guest(grace=0.0)
                    break
                if not connected and time.monotonic() > self._lost_since + self.recovery_timeout:
                    log.warning("agent did not come back within the recovery timeout")
                    await self._stop_guest(grace=0.0)
                    break
                await asyncio.sleep(1.0)
        finally:
            await self.session.close()
            if self.qmp is not None:
                self.qmp.close()
        return 0

    _lost_since = 0.0

    async def _subscribe_and_serve(self) -> bool:
        """One subscription; True if it was established (then it ended)."""
        assert self.session is not None
        subscribe: dict[str, Any] = {
            "unacknowledged_updates": [
                {"framework_id": {"value": self.framework_id}, "status": u["status"]}
                for u in self.unacked.values()
            ],
            # Our task was delivered already: a recovering agent must not deliver it again.
            "unacknowledged_tasks": [self.task] if self.task is not None else [],
        }
        try:
            response = await self.session.post(
                self.url,
                json=self._call("SUBSCRIBE", subscribe=subscribe),
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            )
        except (aiohttp.ClientError, OSError) as e:
            log.info("cannot subscribe: %s", e)
            return False
        if response.status != 200:
            log.info("SUBSCRIBE answered %s", response.status)
            response.close()
            return False
        reader = RecordIOReader()
        try:
            while chunk := await response.content.readany():
                for data in reader.feed(chunk):
                    await self._on_event(json.loads(data))
                    if self.done.is_set():
                        return True
        except (aiohttp.ClientError, OSError, ValueError) as e:
            log.info("event stream broke: %s", e)
        finally:
            response.close()
        self._lost_since = time.monotonic()
        return True

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "LAUNCH":
            await self._launch(event["launch"]["task"])
        elif kind == "KILL":
            asyncio.create_task(self._kill(event["kill"]))
        elif kind == "MESSAGE":
            await self._message(event["message"].get("data", ""))
        elif kind == "ACKNOWLEDGED":
            self.unacked.pop(event["acknowledged"].get("uuid", ""), None)
            if self.terminal_uuid is not None and self.terminal_uuid not in self.unacked:
                self.done.set()
        elif kind == "SHUTDOWN":
            await self._stop_guest(grace=0.0)
            self.done.set()
        elif kind == "LAUNCH_GROUP":
            for task in event["launch_group"]["task_group"].get("tasks", []):
                await self._update(task, task_states.ERROR, "the VM executor runs single tasks")

    async def _update(self, task: dict[str, Any], state: str, message: str) -> None:
        raw_uuid = uuid.uuid4().bytes
        status = {
            "task_id": task["task_id"],
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "message": message,
            "uuid": base64.b64encode(raw_uuid).decode(),
            "executor_id": {"value": self.executor_id},
            "timestamp": time.time(),
        }
        if self.accel:
            status["labels"] = {"labels": [{"key": "accel", "value": self.accel}]}
        self.unacked[status["uuid"]] = {"status": status}
        if task_states.is_terminal(state):
            self.terminal_uuid = status["uuid"]
            asyncio.get_running_loop().call_later(ACK_FAILSAFE, self.done.set)
        assert self.session is not None
        call = self._call("UPDATE", update={"status": status})
        try:
            async with self.session.post(self.url, json=call) as response:
                if response.status >= 300:
                    log.warning("UPDATE answered %s: %s", response.status, await response.text())
        except (aiohttp.ClientError, OSError) as e:
            log.info("UPDATE not delivered (resent on re-subscription): %s", e)

    # -- the guest --------------------------------------------------------------------------

    async def _launch(self, task: dict[str, Any]) -> None:
        if self.task is not None:
            await self._update(task, task_states.ERROR, "this VM executor already runs a guest")
            return
        self.task = task
        try:
            data = base64.b64decode(task.get("data", ""), validate=True)
            spec = guest.guest_spec(
                task.get("name", "vm"), json.loads(data or b"null"), scalar_resources(task)
            )
        except (ValueError, guest.GuestConfigError) as e:
            await self._update(task, task_states.ERROR, f"bad guest description: {e}")
            return
        await self._update(task, task_states.STARTING, "starting the guest")
        kernel = os.path.join(self.sandbox, spec.kernel)
        self.accel = spec.accel if spec.accel != "auto" else await probe_kvm(kernel)
        if self.stopping:
            return  # killed while probing: TASK_KILLED was sent, no guest is started
        argv = guest.qemu_argv(spec, self.accel, self.qemu_binary)
        log.info("starting %s", " ".join(argv))
        qemu_log = open(os.path.join(self.sandbox, guest.QEMU_LOG_FILE), "ab")  # noqa: SIM115
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.sandbox,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=qemu_log,
            )
        except OSError as e:
            await self._update(task, task_states.FAILED, f"cannot start {argv[0]}: {e}")
            return
        finally:
            qemu_log.close()
        self.qmp = Qmp(self.process)
        if await self.qmp.execute("qmp_capabilities", timeout=30.0) is None:
            await self._guest_ended()
            return
        await self._update(task, task_states.RUNNING, f"guest running ({self.accel})")
        asyncio.create_task(self._watch_console())
        asyncio.create_task(self._watch_events())
        asyncio.create_task(self._wait_guest())

    async def _wait_guest(self) -> None:
        assert self.process is not None
        await self.process.wait()
        await self._guest_ended()

    async def _guest_ended(self) -> None:
        assert self.process is not None and self.task is not None
        code = await self.process.wait()
        state, message = guest.end_of_guest(code, self.stopping, self.panicked)
        await self._update(self.task, state, message)

    async def _watch_console(self) -> None:
        """Stops a guest whose kernel panicked (it would hang or reboot forever)."""
        path = os.path.join(self.sandbox, guest.CONSOLE_FILE)
        offset = 0
        tail = b""
        while self.process is not None and self.process.returncode is None:
            await asyncio.sleep(0.5)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            offset += len(chunk)
            if guest.PANIC_MARKER in tail + chunk:
                self.panicked = True
                if self.qmp is not None and await self.qmp.execute("quit") is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                return
            tail = chunk[-len(guest.PANIC_MARKER) :]

    async def _watch_events(self) -> None:
        """Reports guest resets: the task keeps running across them."""
        assert self.qmp is not None
        while True:
            event = await self.qmp.events.get()
            if event.get("event") == "RESET" and self.task is not None and not self.stopping:
                guest_reset = event.get("data", {}).get("guest", True)
                why = "guest rebooted" if guest_reset else "guest reset"
                await self._update(self.task, task_states.RUNNING, why)

    async def _message(self, data: str) -> None:
        try:
            action = json.loads(base64.b64decode(data)).get("action")
        except (ValueError, AttributeError):
            log.warning("ignoring a malformed framework message")
            return
        if action == "restart" and self.qmp is not None and not self.stopping:
            await self.qmp.execute("system_reset")
        else:
            log.warning("unknown framework message action %r", action)

    async def _kill(self, kill: dict[str, Any]) -> None:
        grace = DEFAULT_GRACE
        policy = kill.get("kill_policy") or (self.task or {}).get("kill_policy") or {}
        nanos = (policy.get("grace_period") or {}).get("nanoseconds")
        if isinstance(nanos, int | float):
            grace = max(0.0, nanos / 1e9)
        if self.process is None:
            if self.task is not None and self.terminal_uuid is None:
                self.stopping = True
                await self._update(self.task, task_states.KILLED, "killed before it started")
            return
        await self._stop_guest(grace)

    async def _stop_guest(self, grace: float) -> None:
        """ACPI power button, then QMP quit after ``grace`` seconds, then SIGKILL."""
        if self.process is None or self.process.returncode is not None:
            return
        self.stopping = True
        if grace > 0 and self.qmp is not None:
            await self.qmp.execute("system_powerdown")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.process.wait()
        if self.process.returncode is None and self.qmp is not None:
            await self.qmp.execute("quit", timeout=3.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.process.wait()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s vm-executor: %(message)s"
    )
    missing = [
        v
        for v in ("MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID")
        if v not in os.environ
    ]
    if missing:
        print(f"vm executor: missing environment {missing}", file=sys.stderr)
        return 2
    return asyncio.run(VmExecutor(dict(os.environ)).run())


if __name__ == "__main__":
    sys.exit(main())

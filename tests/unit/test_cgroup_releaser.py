"""The cgroup releaser (`butte.agent.containerizer.releaser`): finished containers' groups are
removed by one worker thread, busy ones retried while the others go on, hopeless ones given
up on, and `Isolation.release`/`Isolation.close` use it (on a fake v1 tree of plain
directories, which ``rmdir`` removes as the kernel would an empty group)."""

from __future__ import annotations

import threading
from pathlib import Path

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolation import Isolation
from butte.agent.containerizer.isolators import IsolationOptions, IsolatorContext
from butte.agent.containerizer.isolators.cgroups_mem import CgroupsMem
from butte.agent.containerizer.releaser import CgroupReleaser

WAIT = 30.0  # generous: the machine running the tests may be loaded


def fake_v1(root: Path) -> cgroupfs.Cgroups:
    for controller, marker in (("memory", "memory.limit_in_bytes"), ("freezer", "cgroup.procs")):
        (root / controller).mkdir(parents=True)
        (root / controller / marker).write_text("")
    return cgroupfs.detect(str(root), "butte", ["memory"])


class Recorder:
    """A remove_once that records which thread called it and answers from a script."""

    def __init__(
        self, busy: dict[str, int] | None = None, fail: frozenset[str] = frozenset()
    ) -> None:
        self.busy = dict(busy or {})  # container id -> attempts that find it busy
        self.fail = fail
        self.calls: list[tuple[str, str]] = []  # (container id, thread name)
        self.lock = threading.Lock()

    def __call__(self, container_id: str) -> bool:
        with self.lock:
            self.calls.append((container_id, threading.current_thread().name))
            if container_id in self.fail:
                raise OSError(f"cannot remove {container_id}")
            left = self.busy.get(container_id, 0)
            if left:
                self.busy[container_id] = left - 1
                return False
            return True

    def attempts(self, container_id: str) -> int:
        return sum(1 for cid, _ in self.calls if cid == container_id)


def test_release_returns_at_once_and_the_worker_thread_removes():
    gate = threading.Event()
    done: list[str] = []

    def remove(container_id: str) -> bool:
        gate.wait(WAIT)  # the kernel's slow memory-cgroup teardown
        done.append(threading.current_thread().name)
        return True

    releaser = CgroupReleaser(remove)
    releaser.release("c1")
    assert done == []  # the caller (the event loop) did not wait for it
    gate.set()
    assert releaser.close(WAIT)
    assert done == ["cgroup-releaser"] and releaser.removed == 1


def test_a_busy_container_is_retried_while_the_others_go_on():
    """ "busy" stays busy until "a" and "b", released after it, are gone: a worker that
    waited on it (as `Cgroups.destroy` does) would give up on it instead."""
    calls: list[str] = []

    def remove(container_id: str) -> bool:
        calls.append(container_id)
        return container_id != "busy" or {"a", "b"} <= set(calls)

    releaser = CgroupReleaser(remove)
    for cid in ("busy", "a", "b"):
        releaser.release(cid)
    assert releaser.flush(WAIT)
    assert calls.count("busy") >= 2 and calls.count("a") == calls.count("b") == 1
    assert calls[-1] == "busy"
    assert releaser.removed == 3 and releaser.failed == 0
    releaser.close(WAIT)


def test_hopeless_and_failing_containers_are_given_up_on_and_the_thread_lives_on():
    remove = Recorder(busy={"stuck": 10**9}, fail=frozenset({"broken"}))
    releaser = CgroupReleaser(remove, give_up=0.05)
    releaser.release("stuck")
    releaser.release("broken")
    assert releaser.flush(WAIT)
    releaser.release("fine")
    assert releaser.flush(WAIT)
    assert releaser.failed == 2 and releaser.removed == 1
    assert remove.attempts("broken") == 1 and remove.attempts("stuck") > 1
    assert releaser.close(WAIT)


def test_isolation_release_removes_the_groups_off_the_callers_thread(tmp_path):
    cg = fake_v1(tmp_path)
    mem = CgroupsMem(IsolatorContext(IsolationOptions(), None, cg))
    isolation = Isolation([mem], cg)
    for cid in ("c1", "c2"):
        cg.create(isolation.controllers, cid)
    calls: list[str] = []
    remove_once = isolation._remove_once

    def recording(container_id: str) -> bool:
        calls.append(threading.current_thread().name)
        return remove_once(container_id)

    isolation.releaser = CgroupReleaser(recording)
    isolation.release("c1")
    assert isolation.releaser is not None and isolation.releaser.flush(WAIT)
    assert not (tmp_path / "memory/butte/c1").exists()
    assert not (tmp_path / "freezer/butte/c1").exists()
    assert (tmp_path / "memory/butte/c2").exists()  # only what was released
    assert calls == ["cgroup-releaser"]
    isolation.release("c2")
    isolation.close()  # waits for the releaser, then removes the emptied roots
    assert not (tmp_path / "memory/butte").exists()
    assert not (tmp_path / "freezer/butte").exists()

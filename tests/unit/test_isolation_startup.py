"""Agent start-up checks of --isolation and the isolators' flags: Mesos' isolator names
(aliases, the ones butte always does, cgroups/all, the ones it lacks), and
--cgroups_limit_swap / --cgroups_enable_cfs on kernels without the files they write (fake
cgroup v1 and v2 trees of plain files)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from test_agent_isolation import context, fake_v2, kernel_dir

from butte.agent.containerizer import cgroupfs, linux
from butte.agent.containerizer.isolators import (
    ALIASES,
    ALWAYS_ON,
    MESOS_ONLY,
    IsolationOptions,
    IsolatorUnavailable,
    build,
    known_isolators,
    parse_isolation,
)
from butte.agent.containerizer.isolators.cgroups_cpu import CgroupsCpu
from butte.agent.containerizer.isolators.cgroups_mem import CgroupsMem

# -- names -----------------------------------------------------------------------------------


def test_mesos_names_butte_does_anyway_are_accepted_and_build_nothing():
    assert parse_isolation("filesystem/posix,posix/cpu,posix/mem") == ["posix/cpu", "posix/mem"]
    flag = "environment_secret,volume/sandbox_path,volume/host_path,docker/runtime"
    assert parse_isolation(f"{flag},filesystem/linux") == ["filesystem/linux"]
    assert parse_isolation("filesystem/posix") == []
    # Every name butte accepts is listed in the refusal of an unknown one.
    assert set(ALWAYS_ON) | set(ALIASES) | {"cgroups/all"} <= set(known_isolators())


def test_an_alias_is_its_isolator_and_counts_once_beside_it():
    assert parse_isolation("posix/disk") == ["disk/du"]
    assert parse_isolation("posix/disk,cgroups/mem,disk/du") == ["disk/du", "cgroups/mem"]
    assert parse_isolation("cgroups/mem,disk/du,posix/disk") == ["cgroups/mem", "disk/du"]
    # The very same name twice is still a mistake (Mesos refuses it too).
    with pytest.raises(IsolatorUnavailable, match="named twice"):
        parse_isolation("posix/disk,posix/disk")


def test_mesos_deprecated_whole_values_stand_for_their_pairs(caplog):
    assert parse_isolation("process") == ["posix/cpu", "posix/mem"]
    assert parse_isolation(" cgroups ") == ["cgroups/cpu", "cgroups/mem"]
    assert "--isolation=cgroups is deprecated" in caplog.text
    # Only as the whole value, as in Mesos: beside other names it is still unknown.
    with pytest.raises(IsolatorUnavailable, match="unknown isolator"):
        parse_isolation("process,disk/du")


def test_a_mesos_isolator_butte_lacks_is_refused_as_such_not_as_a_typo():
    with pytest.raises(IsolatorUnavailable) as refused:
        parse_isolation("cgroups/mem,namespaces/ipc")
    assert str(refused.value) == "namespaces/ipc is a Mesos isolator that butte does not implement"
    with pytest.raises(IsolatorUnavailable) as both:
        parse_isolation("cgroups/devices,cgroups/memm,network/cni")
    message = str(both.value)
    assert message.startswith("unknown isolator(s) cgroups/memm (did you mean cgroups/mem?)")
    assert "this agent has: cgroups/all, cgroups/cpu," in message
    assert "cgroups/devices is a Mesos isolator that butte does not implement" in message
    assert "network/cni is a Mesos isolator that butte does not implement" in message
    assert "cgroups/devices," not in message.split(";")[0]  # not listed among the typos
    for name in MESOS_ONLY:
        assert name not in known_isolators()
        with pytest.raises(IsolatorUnavailable, match="butte does not implement"):
            parse_isolation(name)


def test_two_filesystem_isolators_are_refused():
    with pytest.raises(IsolatorUnavailable, match="only one filesystem isolator"):
        parse_isolation("filesystem/posix,filesystem/linux")
    with pytest.raises(IsolatorUnavailable, match="named twice"):
        parse_isolation("filesystem/posix,filesystem/posix")


def _agent_args(*argv: str) -> argparse.Namespace:
    from butte.agent.main import add_flags

    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(["--master", "127.0.0.1:5050", "--work_dir", "/tmp/w", *argv])


def test_agent_start_up_exits_2_on_names_it_cannot_use(capsys):
    from butte.agent.main import run

    assert run(_agent_args("--isolation", "posix/cpu,namespaces/ipc")) == 2
    err = capsys.readouterr().err
    assert "--isolation: namespaces/ipc is a Mesos isolator that butte does not implement" in err
    assert run(_agent_args("--isolation", "posix/cpu,nope/nope")) == 2
    assert "unknown isolator(s) nope/nope" in capsys.readouterr().err


# -- cgroups/all -----------------------------------------------------------------------------


def _options(hierarchy: Path, **flags: object) -> IsolationOptions:
    return IsolationOptions(cgroups_hierarchy=str(hierarchy), **flags)  # type: ignore[arg-type]


def _built(names: str, options: IsolationOptions) -> list[str]:
    isolators, _ = build(parse_isolation(names), options, None)
    return [i.name for i in isolators]


def test_cgroups_all_is_every_cgroup_isolator_the_machine_can_provide(tmp_path, monkeypatch):
    monkeypatch.setattr(linux, "is_root", lambda: True)
    every = fake_v2(tmp_path / "all")
    assert _built("cgroups/all", _options(every)) == ["cgroups/cpu", "cgroups/mem", "cgroups/pids"]
    # Where it stands; one also named on its own is not taken twice.
    assert _built("namespaces/pid,cgroups/all,cgroups/mem", _options(every)) == [
        "namespaces/pid",
        "cgroups/cpu",
        "cgroups/pids",
        "cgroups/mem",
    ]
    no_pids = fake_v2(tmp_path / "no-pids", "cpu memory")
    assert _built("cgroups/all", _options(no_pids)) == ["cgroups/cpu", "cgroups/mem"]
    # Named on its own, an isolator must work, cgroups/all or not.
    with pytest.raises(IsolatorUnavailable, match="lacks controller"):
        _built("cgroups/all,cgroups/pids", _options(no_pids))
    # v1: the controllers that are mounted (and the freezer every v1 container needs).
    for controller, marker in (("memory", "memory.limit_in_bytes"), ("freezer", "cgroup.procs")):
        (tmp_path / "v1" / controller).mkdir(parents=True)
        (tmp_path / "v1" / controller / marker).write_text("")
    assert _built("cgroups/all", _options(tmp_path / "v1")) == ["cgroups/mem"]


def test_cgroups_all_fails_only_when_no_cgroup_isolator_can_work(tmp_path, monkeypatch):
    monkeypatch.setattr(linux, "is_root", lambda: True)
    none = fake_v2(tmp_path / "none", "io")
    with pytest.raises(IsolatorUnavailable, match="cgroups/all: no cgroup isolator can work"):
        _built("cgroups/all", _options(none))
    monkeypatch.setattr(linux, "is_root", lambda: False)
    with pytest.raises(IsolatorUnavailable, match="need the agent to run as root"):
        _built("cgroups/all", _options(fake_v2(tmp_path / "all")))


# -- --cgroups_limit_swap and --cgroups_enable_cfs -------------------------------------------


def _v1(root: Path, **controllers: str) -> cgroupfs.Cgroups:
    """A fake v1 tree with ``controller=marker`` hierarchies (and the freezer)."""
    for controller, marker in {**controllers, "freezer": "cgroup.procs"}.items():
        (root / controller).mkdir(parents=True, exist_ok=True)
        (root / controller / marker).write_text("")
    return cgroupfs.detect(str(root), "butte", [c for c in controllers if c != "freezer"])


def test_v1_swap_and_cfs_flags_need_their_files_at_start_up(tmp_path):
    cg = _v1(tmp_path, memory="memory.limit_in_bytes", cpu="cpu.shares", cpuacct="cpuacct.usage")
    memsw = tmp_path / "memory/memory.memsw.limit_in_bytes"
    with pytest.raises(IsolatorUnavailable) as swap:
        CgroupsMem(context(cg, cgroups_limit_swap=True))
    assert str(swap.value).startswith(f"--cgroups_limit_swap: {memsw} does not exist")
    quota = tmp_path / "cpu/cpu.cfs_quota_us"
    with pytest.raises(IsolatorUnavailable) as cfs:
        CgroupsCpu(context(cg, cgroups_enable_cfs=True))
    assert str(cfs.value).startswith(f"--cgroups_enable_cfs: {quota} does not exist")
    # Without the flags nothing is asked of the kernel; with the files, the flags work.
    CgroupsMem(context(cg))
    CgroupsCpu(context(cg))
    memsw.write_text("9223372036854771712\n")
    quota.write_text("-1\n")
    CgroupsMem(context(cg, cgroups_limit_swap=True))
    CgroupsCpu(context(cg, cgroups_enable_cfs=True))


def test_v2_swap_and_cfs_flags_are_checked_in_the_root_group(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["memory", "cpu", "cpuacct"])
    kernel_dir(hierarchy, "butte")
    (hierarchy / "butte/memory.swap.max").unlink()
    (hierarchy / "butte/cpu.max").unlink()
    with pytest.raises(IsolatorUnavailable, match="--cgroups_limit_swap: .*memory.swap.max does"):
        CgroupsMem(context(cg, cgroups_limit_swap=True))
    # The hierarchy's root shows no controller files: the check enabled the controller for
    # butte's root group, as the first launch would (the fake file keeps the last write).
    assert (hierarchy / "cgroup.subtree_control").read_text() == "+memory"
    with pytest.raises(IsolatorUnavailable, match="--cgroups_enable_cfs: .*butte/cpu.max does"):
        CgroupsCpu(context(cg, cgroups_enable_cfs=True))
    (hierarchy / "butte/memory.swap.max").write_text("max\n")
    (hierarchy / "butte/cpu.max").write_text("max 100000\n")
    CgroupsMem(context(cg, cgroups_limit_swap=True))
    CgroupsCpu(context(cg, cgroups_enable_cfs=True))


def test_start_up_stops_on_a_flag_the_kernel_cannot_honour(tmp_path, monkeypatch):
    """Through `build`, as the agent starts: the error stops it (exit status 1)."""
    monkeypatch.setattr(linux, "is_root", lambda: True)
    _v1(tmp_path, memory="memory.limit_in_bytes")
    options = _options(tmp_path, cgroups_limit_swap=True)
    with pytest.raises(IsolatorUnavailable, match="--cgroups_limit_swap"):
        build(["cgroups/mem"], options, None)
    with pytest.raises(IsolatorUnavailable, match="--cgroups_limit_swap"):
        build(parse_isolation("cgroups/all"), options, None)
    assert _built("cgroups/all", _options(tmp_path)) == ["cgroups/mem"]

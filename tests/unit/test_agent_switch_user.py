"""``--switch_user`` in `Isolation.prepare`: as root a container gets its user; an agent that
is not root runs containers of its own user and refuses the others (Mesos' su would fail),
rather than run them as itself."""

from __future__ import annotations

import os
import pwd

import pytest

from butte.agent.containerizer import linux
from butte.agent.containerizer.isolation import Isolation
from butte.agent.containerizer.isolators import LaunchRefused
from butte.agent.effects import LaunchContainer
from butte.testing.require import require

ME = pwd.getpwuid(os.geteuid()).pw_name
OTHER = "nobody" if ME != "nobody" else "root"


def spec(user: str | None) -> LaunchContainer:
    return LaunchContainer("c1", "fw", "ex", "/nowhere", ("x",), {}, user=user)


def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linux, "is_root", lambda: False)


def test_an_agent_that_is_not_root_refuses_other_users(monkeypatch):
    not_root(monkeypatch)
    isolation = Isolation([], None, switch_user=True)
    with pytest.raises(LaunchRefused, match=f"cannot run as user '{OTHER}'.*needs the agent"):
        isolation.prepare(spec(OTHER))
    with pytest.raises(LaunchRefused, match="does not exist on this agent"):
        isolation.prepare(spec("no-such-user-here"))
    # Its own user, or none asked for: runs, nothing to switch.
    assert isolation.prepare(spec(ME)).user is None
    assert isolation.prepare(spec(None)).user is None


def test_without_switch_user_every_task_runs_as_the_agent(monkeypatch):
    not_root(monkeypatch)
    assert Isolation([], None, switch_user=False).prepare(spec(OTHER)).user is None


def test_as_root_a_container_gets_its_user():
    if os.geteuid() != 0:
        require("switching users needs root", "root")
    isolation = Isolation([], None, switch_user=True)
    entry = pwd.getpwnam(OTHER)
    assert isolation.prepare(spec(OTHER)).user == (OTHER, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    assert isolation.prepare(spec(ME)).user is None  # already that user

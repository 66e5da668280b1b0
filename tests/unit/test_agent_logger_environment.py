"""A container's own log rotation settings (``CONTAINER_LOGGER_*`` in its CommandInfo's
environment, as Mesos' logrotate logger reads them): parsed over the agent's policy, and an
invalid one fails the launch in the agent core."""

from __future__ import annotations

import pytest
from agent_kit import Harness, command_task, run

from butte.agent.containerizer.logrotate import RotationPolicy

AGENT = RotationPolicy(max_stdout=10 << 20, max_stderr=10 << 20, keep_stdout=9, keep_stderr=9)


def env(**variables: str) -> dict:
    return {"variables": [{"name": k, "value": v} for k, v in variables.items()]}


def test_each_variable_overrides_its_own_setting():
    assert AGENT.for_environment({}) is AGENT
    own = AGENT.for_environment(
        {
            "CONTAINER_LOGGER_MAX_STDOUT_SIZE": "4KB",
            "CONTAINER_LOGGER_LOGROTATE_STDERR_OPTIONS": "rotate 2",
            "MAX_STDOUT_SIZE": "1KB",  # not prefixed: not the logger's
        }
    )
    assert own == RotationPolicy(max_stdout=4096, max_stderr=10 << 20, keep_stdout=9, keep_stderr=2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONTAINER_LOGGER_MAX_STDERR_SIZE", "lots"),
        ("CONTAINER_LOGGER_MAX_STDOUT_SIZE", "0"),
        ("CONTAINER_LOGGER_LOGROTATE_STDOUT_OPTIONS", "compress"),
        ("CONTAINER_LOGGER_MAX_STDOUT_SIZE", "1KB"),  # under a page, as Mesos refuses
        ("CONTAINER_LOGGER_MAX_STDOUT_SIZ", "1MB"),  # a misspelling is refused, not ignored
    ],
)
def test_an_invalid_value_is_refused_naming_its_variable(name, value):
    with pytest.raises(ValueError, match=name):
        AGENT.for_environment({name: value})


def test_a_launch_with_invalid_settings_fails_when_logs_are_rotated():
    h = Harness(log_rotation=AGENT)
    h.register()
    bad = {"value": "true", "environment": env(CONTAINER_LOGGER_MAX_STDOUT_SIZE="-1")}
    run(h, command_task("t1", command=bad))
    (failed,) = h.updates()
    assert (failed.state, failed.reason) == ("TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED")
    assert "CONTAINER_LOGGER_MAX_STDOUT_SIZE" in (failed.message or "")
    assert not h.launched
    # Without rotation the variables are only the task's environment (Mesos' sandbox logger).
    plain = Harness()
    plain.register()
    run(plain, command_task("t1", command=bad))
    assert plain.launched and not plain.updates()

"""Dispatch is written out as tables keyed by the protocol's call and message types: every
type the protocol lists has a handler (or is refused on purpose), every handler is in its
table, and a table out of step with the protocol fails at import, not at run time."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import get_args

import pytest

from butte.agent import operator_api as agent_operator
from butte.core import internal
from butte.core.messages import SCHEDULER_CALL_TYPES
from butte.core.operator import AGENT_CALL_TYPES, MASTER_CALL_TYPES
from butte.master import agents, machine
from butte.master import operator as master_operator


def _methods(cls: type, prefix: str) -> set[str]:
    return {
        name for name, _ in inspect.getmembers(cls, inspect.isfunction) if name.startswith(prefix)
    }


def test_scheduler_calls_cover_the_protocol() -> None:
    assert machine.SCHEDULER_CALLS.keys() == SCHEDULER_CALL_TYPES - {"SUBSCRIBE"}
    handlers = {f.__name__ for f in machine.SCHEDULER_CALLS.values()}
    assert handlers == _methods(machine.MasterMachine, "_call_")


def test_agent_messages_cover_the_protocol() -> None:
    types = set(get_args(internal.AgentMessage))
    assert agents.AGENT_MESSAGES.keys() == types - {internal.RegisterAgent}


def test_master_operator_calls_cover_the_protocol() -> None:
    served = master_operator.MASTER_CALLS.keys()
    assert served | master_operator.UNSUPPORTED_MASTER_CALLS | {"SUBSCRIBE"} == MASTER_CALL_TYPES
    handlers = {f.__name__ for f in master_operator.MASTER_CALLS.values()}
    assert handlers == _methods(master_operator.OperatorApi, "call_")


def test_agent_operator_calls_are_protocol_calls() -> None:
    assert agent_operator.AGENT_CALLS.keys() <= AGENT_CALL_TYPES
    handlers = {f.__name__ for f in agent_operator.AGENT_CALLS.values()}
    assert handlers == _methods(agent_operator.AgentOperatorApi, "call_")


@pytest.mark.parametrize(
    "patch, module",
    [
        (
            "m.SCHEDULER_CALL_TYPES = m.SCHEDULER_CALL_TYPES | {'NEW_CALL'}",
            "butte.master.machine",
        ),
        (
            "o.MASTER_CALL_TYPES = o.MASTER_CALL_TYPES | {'NEW_CALL'}",
            "butte.master.operator",
        ),
        (
            "o.AGENT_CALL_TYPES = o.AGENT_CALL_TYPES - {'GET_HEALTH'}",
            "butte.agent.operator_api",
        ),
    ],
)
def test_a_call_type_without_handler_fails_at_import(patch: str, module: str) -> None:
    code = (
        "import importlib, butte.core.messages as m, butte.core.operator as o\n"
        f"{patch}\n"
        f"importlib.import_module({module!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "ImportError" in done.stderr, done.stderr

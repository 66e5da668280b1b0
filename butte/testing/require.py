"""Missing test components: skipped on a developer's machine, failed under ``CI=true``.

A green CI must mean the tests ran, so a test whose component (ZooKeeper, Chromium, pymesos,
a container runtime, ...) is missing fails there instead of skipping. Optional hardware (GPUs)
is the exception: such tests call ``pytest.skip`` directly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    """Whether the suite runs as CI (``CI=true``, as CI services and `.ci/run` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(missing: str | None, what: str) -> None:
    """Stops the test when ``missing`` (a reason) is set: a skip locally, a failure in CI.

    ``what`` names the component for the message, e.g. ``"ZooKeeper"``.
    """
    if not missing:
        return
    message = f"{what} not available: {missing}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing test component is a failure)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, hint: str = "installed by scripts/setup.sh --test") -> ModuleType:
    """Imports ``name`` for a test, as :func:`pytest.importorskip` does, but under
    ``CI=true`` a missing module fails the test."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require(f"{e} ({hint})", f"Python module {name}")
        raise  # not reached: require() raised

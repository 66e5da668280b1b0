"""`butte run` says, periodically, what its tasks wait for (against the fake master)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from butte.cli import run as run_module
from butte.cli.run import JobSpec, run_job
from butte.core.resources import parse_resources


async def notes_until(spec: JobSpec, needle: str, count: int) -> list[str]:
    """Runs the job until ``count`` progress notes contain ``needle``; the notes."""
    notes: list[str] = []
    job = asyncio.ensure_future(run_job(spec, write=lambda line: None, info=notes.append))
    try:
        async with asyncio.timeout(20):
            while sum(needle in n for n in notes) < count:
                assert not job.done(), notes
                await asyncio.sleep(0.02)
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    return notes


@pytest.fixture
def fast_notes(monkeypatch):
    monkeypatch.setattr(run_module, "WAITING_NOTE_SECONDS", 0.2)


def spec_for(fake, resources: str) -> JobSpec:
    return JobSpec(
        master=fake.address, name="w", command="true", resources=parse_resources(resources)
    )


def test_no_agents_no_offers_is_said_periodically(fake_master, fast_notes):
    notes = asyncio.run(notes_until(spec_for(fake_master, "cpus:1;mem:32"), "none received", 2))
    waiting = [n for n in notes if "none received" in n]
    assert "1 task(s) of cpus:1;mem:32" in waiting[0]
    assert "no agent registered" in waiting[0]


def test_offers_that_do_not_fit_are_said_periodically(fake_master, fast_notes):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    spec = spec_for(fake_master, "cpus:8;mem:32")
    notes = asyncio.run(notes_until(spec, "Waiting for offers that fit", 2))
    assert any("host1" in n and "cpus:8" in n for n in notes)

"""Group commit of the agent's checkpoints: disk writes off the event loop, one sync per batch,
and every other effect held back until the checkpoints emitted before it are durable.

The core's effects come in order; some are checkpoints. The contract (`butte.agent.effects`)
is that a checkpoint is on disk before any effect the core emitted after it is carried out,
and that effects are carried out in the order they were emitted. Writing each checkpoint
synchronously on the loop keeps that, at the price of an fsync per record on the loop.
`GroupCommit` keeps it with batches instead::

    effect ──► checkpoint? ──yes──► open batch (all checkpoints of this loop iteration and of
       │                            the time the previous batch was being written)
       │ no                                        │ flushed when nothing is in flight
       ▼                                           ▼
    any batch open or in flight? ──yes──► held behind the newest one
       │ no                                        │ its batch durable (worker thread)
       ▼                                           ▼
    carried out now                      released in order (`release`)

At most one batch is written at a time (one worker thread, so disk operations keep effect
order), and one is open. A checkpoint always joins the open batch, even when effects emitted
before it are still held: no effect is ever waited for by the shell (a launch, a kill, a
message are requests that complete later or may be lost in a crash), so a disk state in which
a later checkpoint is durable and an earlier effect not yet carried out is one the
synchronous agent could crash into as well (the effect issued, not yet taken effect).
Removals (`RemoveCheckpoint`) promise nothing durable: they join the open batch to stay in
order with the writes before them, or, with no batch open, go to the worker on their own and
hold nothing back.

A batch that fails to write calls `on_failure` and releases nothing (the agent exits: what
follows would promise durability it does not have).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from butte.agent.effects import Checkpoint, Effect, RemoveCheckpoint

log = logging.getLogger("butte.agent")


@dataclass
class _Batch:
    """Checkpoints written together, and the effects waiting for them."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    held: list[Any] = field(default_factory=list)


class GroupCommit:
    """Orders effects behind checkpoints written in batches; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write_batch: Callable[[list[Checkpoint]], None],
        release: Callable[[list[Any]], None],
        on_failure: Callable[[BaseException], None],
        executor: Executor | None = None,
    ) -> None:
        self._loop = loop
        self._write_batch = write_batch
        self._release = release
        self._on_failure = on_failure
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._open: _Batch | None = None
        self._in_flight: _Batch | None = None
        self._flush_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._jobs = 0  # batches and removals handed to the worker, not yet done
        self.failed = False
        self.batches = 0  # statistics: batches written

    @property
    def holding(self) -> bool:
        """Whether an effect admitted now would be held (a batch is open or in flight)."""
        return self._open is not None or self._in_flight is not None

    def admit(self, effect: Effect | Any) -> bool:
        """Takes ``effect`` if it is a checkpoint or must wait for one (True); False means
        the caller carries it out now. Anything that is not a checkpoint may be admitted
        (the shell wraps some effects); it comes back through ``release`` as it was."""
        if isinstance(effect, RemoveCheckpoint):
            if self._open is not None:
                self._open.checkpoints.append(effect)
            else:
                self._submit([effect], None)
            return True
        if isinstance(effect, Checkpoint):
            if self._open is None:
                self._open = _Batch()
                self._schedule_flush()
            self._open.checkpoints.append(effect)
            return True
        newest = self._open or self._in_flight
        if newest is None:
            return False
        newest.held.append(effect)
        return True

    def pending(self) -> int:
        """Effects (checkpoints and held ones) not yet carried out."""
        return sum(len(b.checkpoints) + len(b.held) for b in (self._open, self._in_flight) if b)

    async def wait_idle(self) -> None:
        """Returns once every checkpoint admitted so far is written and its effects released
        (or a batch failed)."""
        while not self.failed and (self._jobs or self._open is not None):
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        """Stops the worker thread (after what it has been given)."""
        self._executor.shutdown(wait=True)

    # -- batches -------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        # At the end of this loop iteration, so every checkpoint of the iteration joins.
        if self._in_flight is None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._in_flight is not None or self._open is None or self.failed:
            return
        batch, self._open = self._open, None
        self._in_flight = batch
        self._submit(batch.checkpoints, batch)

    def _submit(self, checkpoints: list[Checkpoint], batch: _Batch | None) -> None:
        self._jobs += 1
        self._idle.clear()
        future = self._loop.run_in_executor(self._executor, self._write_batch, checkpoints)
        future.add_done_callback(lambda f: self._done(f, batch))

    def _done(self, future: asyncio.Future, batch: _Batch | None) -> None:
        self._jobs -= 1
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if batch is None:  # removals alone: nothing waits for them
            if error is not None:
                log.warning("removing a checkpoint failed: %s", error)
        elif error is not None:
            self.failed = True
            self._in_flight = None
            self._on_failure(error)
        else:
            self.batches += 1
            self._in_flight = None
            if batch.held:
                self._release(batch.held)
            if self._open is not None:
                self._schedule_flush()
        if self.failed or (not self._jobs and self._open is None):
            self._idle.set()

"""The agent's side of the master WebSocket (`butte.agent.master_link`): the messages queued
when its writer runs leave in one frame once the master has said it takes batches, and the
master's decoder (`butte.core.internal.decode_agent_messages`) takes such frames back."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from butte.agent.master_link import MAX_BATCH_BYTES, MasterLink
from butte.core import internal
from butte.core.messages import ID, TaskStatus


class FakeWebSocket:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_str(self, data: str) -> None:
        self.frames.append(data)


def update(task: str) -> internal.StatusUpdate:
    status = TaskStatus(task_id=ID(task), state="TASK_RUNNING", uuid=f"u-{task}")
    return internal.StatusUpdate(framework_id=ID("fw"), status=status)


def link() -> tuple[MasterLink, list[internal.MasterMessage]]:
    heard: list[internal.MasterMessage] = []
    return MasterLink(
        None, on_open=lambda: None, on_message=heard.append, on_close=lambda: None
    ), heard


async def written(link: MasterLink, messages: list[msgspec.Struct]) -> list[str]:
    """The frames the writer sends for ``messages``, all queued before it runs."""
    ws, queue = FakeWebSocket(), asyncio.Queue()
    for message in messages:
        queue.put_nowait(internal.encode(message))
    queue.put_nowait(None)  # the connection ends
    await link._write(ws, queue)  # type: ignore[arg-type]
    return ws.frames


@pytest.mark.parametrize("reply", [internal.AgentRegistered, internal.AgentReregistered])
def test_queued_messages_leave_in_one_frame_once_the_master_takes_batches(reply) -> None:
    async def main() -> None:
        agent, heard = link()
        updates = [update(f"t{i}") for i in range(3)]
        # Before the master said anything (REGISTER_AGENT goes first) and to a master that
        # does not take batches (an older one): one message a frame.
        assert len(await written(agent, updates)) == 3
        older = reply(agent_id=ID("a"), master_id="m")
        assert b"batches" not in internal.encode(older)
        agent._deliver(internal.encode(older))
        assert heard == [older] and len(await written(agent, updates)) == 3
        agent._deliver(internal.encode(reply(agent_id=ID("a"), master_id="m", batches=True)))
        (frame,) = await written(agent, updates)
        assert internal.decode_agent_messages(frame) == updates  # in order
        (alone,) = await written(agent, updates[:1])
        assert internal.decode_agent_messages(alone) == updates[:1]
        assert not alone.startswith("[")  # one message is sent as itself

    asyncio.run(main())


def test_a_batch_is_closed_at_its_size_limit() -> None:
    async def main() -> None:
        agent, _ = link()
        agent._batches = True
        big = internal.ExecutorToFramework(
            framework_id=ID("fw"), executor_id=ID("e"), data="x" * (MAX_BATCH_BYTES // 2)
        )
        frames = await written(agent, [big, big, big, update("t")])
        assert [len(internal.decode_agent_messages(f)) for f in frames] == [2, 2]

    asyncio.run(main())


def test_the_master_decodes_one_message_or_an_array_and_refuses_a_bad_frame_whole() -> None:
    one = internal.encode(update("t1"))
    assert internal.decode_agent_messages(one) == [update("t1")]
    assert internal.decode_agent_messages(one.decode()) == [update("t1")]
    both = internal.encode_batch([one, internal.encode(update("t2"))])
    assert internal.decode_agent_messages(both) == [update("t1"), update("t2")]
    for bad in (b"[" + one + b',{"type":"NOPE"}]', b"[" + one, b"[]x", b"7"):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            internal.decode_agent_messages(bad)

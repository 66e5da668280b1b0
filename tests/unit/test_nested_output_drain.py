"""When a nested container's output is drained after its command ended
(`butte.agent.nested.output_pending`): an agent whose event loop was starved past the drain
time keeps reading while output, or its end, waits on a pipe or a terminal; it stops only
for a pipe something left behind holds open with nothing in it."""

from __future__ import annotations

import os
import pty

from butte.agent.nested import output_pending


def test_data_or_an_end_waiting_on_a_pipe_is_pending_and_an_idle_open_pipe_is_not() -> None:
    r, w = os.pipe()
    try:
        assert not output_pending([r])  # held open (a child left behind), nothing written
        os.write(w, b"last line\n")
        assert output_pending([r])
        os.read(r, 100)
        os.close(w)
        assert output_pending([r])  # its end (EOF) is still to be read
    finally:
        os.close(r)
    assert not output_pending([r])  # closed: nothing


def test_a_terminal_whose_command_side_closed_is_pending_until_read_to_its_end() -> None:
    master, slave = pty.openpty()
    try:
        assert not output_pending([master])
        os.write(slave, b"got:x\n")
        os.close(slave)
        assert output_pending([master])  # the last line, then EIO
        assert output_pending([master, 10_000])  # among others, even an unknown fd
    finally:
        os.close(master)

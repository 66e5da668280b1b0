"""`butte.agent.files.SandboxFiles` on a sandbox tree made in a temporary directory: virtual
and real paths, ``latest``, and every way out of a sandbox refused."""

from __future__ import annotations

import base64
import os

import pytest

from butte.agent import paths
from butte.agent.files import MAX_READ, FileError, SandboxFiles, _text

AGENT, FW, EX, RUN = "A-S0", "F-0000", "task-1", "c0ffee"


@pytest.fixture
def tree(tmp_path):
    """A sandbox of task-1 and one of another framework, with hostile symlinks."""
    work = tmp_path / "work"
    sandbox = paths.sandbox_dir(str(work), AGENT, FW, EX, RUN)
    os.makedirs(os.path.join(sandbox, "sub"))
    with open(os.path.join(sandbox, "stdout"), "wb") as f:
        f.write(b"hello\nworld\n")
    with open(os.path.join(sandbox, "sub", "inner"), "w") as f:
        f.write("x")
    os.symlink(RUN, paths.latest_link(sandbox))
    other = paths.sandbox_dir(str(work), AGENT, "OTHER-FW", "secret", "r1")
    os.makedirs(other)
    with open(os.path.join(other, "stdout"), "w") as f:
        f.write("secret")
    os.symlink(other, os.path.join(sandbox, "to-other"))
    os.symlink("/etc/passwd", os.path.join(sandbox, "passwd"))
    os.symlink("sub/inner", os.path.join(sandbox, "inside-link"))
    (tmp_path / "outside").write_text("outside")
    return SandboxFiles(str(work), lambda: AGENT), sandbox


VIRTUAL = f"/frameworks/{FW}/executors/{EX}/runs/latest"


def test_virtual_real_and_latest_paths_reach_the_same_file(tree):
    files, sandbox = tree
    for path in (
        f"{VIRTUAL}/stdout",
        f"/frameworks/{FW}/executors/{EX}/runs/{RUN}/stdout",
        f"{sandbox}/stdout",
    ):
        assert files.read(path, 0, None) == (12, b"hello\nworld\n")


def test_browse_lists_entries_under_the_requested_path(tree):
    files, _ = tree
    names = {e["path"] for e in files.browse(VIRTUAL)}
    assert f"{VIRTUAL}/stdout" in names and f"{VIRTUAL}/sub" in names
    (entry,) = files.browse(f"{VIRTUAL}/stdout")
    assert entry["size"] == 12 and entry["mode"].startswith("-")
    infos = files.list_files(VIRTUAL)["file_infos"]
    assert all(isinstance(i["mode"], int) and "nanoseconds" in i["mtime"] for i in infos)


def test_a_symlink_inside_the_sandbox_is_followed(tree):
    files, _ = tree
    assert files.read(f"{VIRTUAL}/inside-link", 0, None)[1] == b"x"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"{VIRTUAL}/../../../../../outside", 400),
        (f"{VIRTUAL}/sub/../stdout", 400),
        (f"{VIRTUAL}/passwd", 403),
        (f"{VIRTUAL}/to-other/stdout", 403),
        ("/etc/passwd", 404),
        ("stdout", 404),
        (f"/frameworks/{FW}/executors/{EX}", 404),
        (f"/frameworks/{FW}/executors/nope/runs/latest", 404),
        (f"{VIRTUAL}/missing", 404),
        ("", 400),
        ("/frameworks/\x00", 400),
    ],
)
def test_escapes_and_unknown_paths_are_refused(tree, path, status):
    files, _ = tree
    with pytest.raises(FileError) as e:
        files.read(path, 0, None)
    assert e.value.status == status


def test_work_dir_files_outside_sandboxes_are_not_served(tree):
    files, sandbox = tree
    work = sandbox.split("/slaves/")[0]
    with open(os.path.join(work, "meta"), "w") as f:
        f.write("agent state")
    for path in (f"{work}/meta", f"{work}/slaves/{AGENT}", f"{work}/slaves"):
        with pytest.raises(FileError) as e:
            files.browse(path)
        assert e.value.status == 404


def test_offsets_and_lengths(tree):
    files, _ = tree
    path = f"{VIRTUAL}/stdout"
    assert files.read(path, 6, 5) == (12, b"world")
    assert files.read(path, 10**12, 5) == (12, b"")
    assert files.read(path, 0, 0) == (12, b"")
    assert files.read(path, 0, 10**15)[1] == b"hello\nworld\n"  # clamped, not refused
    for offset, length in ((-1, None), (0, -5), (2**63, 1)):
        with pytest.raises(FileError) as e:
            files.read(path, offset, length)
        assert e.value.status == 400
    with pytest.raises(FileError):
        files.read(VIRTUAL, 0, None)  # a directory
    answer = files.read_file(path, 0, 5)
    assert answer == {"size": 12, "data": base64.b64encode(b"hello").decode()}
    assert MAX_READ >= 1 << 20


def test_text_keeps_a_cut_multibyte_character_for_the_next_read():
    data = "héllo €".encode()
    assert _text(data[:-1]) == "héllo "
    assert _text(data) == "héllo €"
    assert _text(b"\xff\xfeok") == "\ufffd\ufffdok"


def test_files_hard_linked_into_a_sandbox_are_not_served(tree, tmp_path):
    files, sandbox = tree
    secret = tmp_path / "host-secret"
    secret.write_text("root's secret")
    os.link(secret, os.path.join(sandbox, "stolen"))
    other = paths.sandbox_dir(str(tmp_path / "work"), AGENT, "OTHER-FW", "secret", "r1")
    os.link(os.path.join(other, "stdout"), os.path.join(sandbox, "tenant"))
    for name in ("stolen", "tenant"):
        with pytest.raises(FileError) as refused:
            files.read(f"{VIRTUAL}/{name}", 0, None)
        assert refused.value.status == 403 and "linked from outside" in refused.value.message
        with pytest.raises(FileError):
            files.read_file(f"{VIRTUAL}/{name}", 0, 10)
    # The sandbox's own files still read; a FIFO or device node is never opened.
    assert files.read(f"{VIRTUAL}/stdout", 0, None)[1] == b"hello\nworld\n"
    os.mkfifo(os.path.join(sandbox, "pipe"))
    with pytest.raises(FileError) as refused:
        files.read(f"{VIRTUAL}/pipe", 0, None)
    assert refused.value.status == 403

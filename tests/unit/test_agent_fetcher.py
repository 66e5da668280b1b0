"""The fetcher on local files: extraction of every archive kind, executables, output_file,
the cache, and refusals (escaping the sandbox, unsupported URIs, missing files)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest

from butte.agent.fetcher import FetchError, fetch, fetch_all
from butte.core.messages import URI


def tar_bytes(mode: str, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("a.tar", "w"),
        ("a.tar.gz", "w:gz"),
        ("a.tgz", "w:gz"),
        ("a.tar.bz2", "w:bz2"),
        ("a.tbz2", "w:bz2"),
        ("a.tar.xz", "w:xz"),
        ("a.txz", "w:xz"),
    ],
)
def test_tar_archives_are_extracted(tmp_path: Path, name: str, mode: str):
    source = tmp_path / name
    source.write_bytes(tar_bytes(mode, {"dir/f.txt": b"hi"}))
    sandbox = tmp_path / "sandbox"
    fetch(URI(value=str(source)), str(sandbox), None)
    assert (sandbox / "dir" / "f.txt").read_bytes() == b"hi"
    assert (sandbox / name).exists()  # the archive stays, like Mesos


def test_zip_gz_bz2_xz(tmp_path: Path):
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("z/n.txt", "zip")
    files = {
        "a.zip": zipped.getvalue(),
        "b.txt.gz": gzip.compress(b"gz"),
        "c.txt.bz2": bz2.compress(b"bz2"),
        "d.txt.xz": lzma.compress(b"xz"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    sandbox = tmp_path / "sandbox"
    fetch_all([(URI(value=f"file://{tmp_path}/{n}"), str(sandbox)) for n in files], None)
    assert (sandbox / "z" / "n.txt").read_text() == "zip"
    assert [(sandbox / n).read_text() for n in ("b.txt", "c.txt", "d.txt")] == ["gz", "bz2", "xz"]


def test_executable_output_file_and_no_extract(tmp_path: Path):
    (tmp_path / "tool.tar.gz").write_bytes(tar_bytes("w:gz", {"x": b"1"}))
    sandbox = tmp_path / "sandbox"
    path = fetch(URI(value=str(tmp_path / "tool.tar.gz"), executable=True), str(sandbox), None)
    assert Path(path).stat().st_mode & 0o111 and not (sandbox / "x").exists()
    fetch(
        URI(value=str(tmp_path / "tool.tar.gz"), extract=False, output_file="sub/t.tgz"),
        str(sandbox),
        None,
    )
    assert (sandbox / "sub" / "t.tgz").exists() and not (sandbox / "x").exists()


def test_cache_keeps_one_copy_per_uri(tmp_path: Path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"v1")
    cache = tmp_path / "cache"
    uri = URI(value=str(source), cache=True)
    fetch(uri, str(tmp_path / "s1"), str(cache))
    source.write_bytes(b"v2")  # the cached copy is used, as long as it exists
    fetch(uri, str(tmp_path / "s2"), str(cache))
    assert (tmp_path / "s2" / "data.bin").read_bytes() == b"v1"
    assert len(list(cache.glob("*/data.bin"))) == 1


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (URI(value="relative/file"), "relative paths"),
        (URI(value="hdfs://nn/file"), "unsupported scheme 'hdfs'"),
        (URI(value="/no/such/file"), "not a readable file"),
        (URI(value="/etc/hostname", output_file="../escape"), "outside the sandbox"),
        (URI(value="/etc/hostname", output_file="/abs"), "relative path"),
        (URI(value="http://127.0.0.1:9/"), "cannot tell a file name"),
    ],
)
def test_refusals_name_the_uri(tmp_path: Path, uri: URI, problem: str):
    with pytest.raises(FetchError, match=problem) as info:
        fetch_all([(uri, str(tmp_path / "sandbox"))], None)
    assert uri.value in str(info.value)


def test_archive_members_cannot_escape(tmp_path: Path):
    (tmp_path / "evil.tar").write_bytes(tar_bytes("w", {"../../evil": b"x"}))
    with pytest.raises(FetchError, match="evil.tar"):
        fetch_all([(URI(value=str(tmp_path / "evil.tar")), str(tmp_path / "s"))], None)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("../../evil", "x")
    (tmp_path / "evil.zip").write_bytes(zipped.getvalue())
    with pytest.raises(FetchError, match="evil.zip.*outside the sandbox"):
        fetch_all([(URI(value=str(tmp_path / "evil.zip")), str(tmp_path / "s"))], None)
    assert not (tmp_path.parent / "evil").exists()

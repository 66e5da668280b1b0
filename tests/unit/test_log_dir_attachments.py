"""`butte.daemon_log`: which paths name an attached log, which file a severity goes to, the
``--log_dir`` file with its stable link, and glog's ``--quiet`` and ``--logbufsecs``."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from butte import daemon_log
from butte.core.flags import add_negations
from butte.master.acls import Acls, parse_acls


@pytest.fixture
def attached_log(tmp_path) -> Iterator[str]:
    path = tmp_path / "master.log"
    path.write_text("a line\n")
    daemon_log.attach(daemon_log.MASTER_LOG, str(path), Acls())
    try:
        yield str(path)
    finally:
        daemon_log.detach(daemon_log.MASTER_LOG)


def test_find_matches_the_virtual_path_and_below_only(attached_log):
    for raw in ("/master/log", "/master/log/", "//master//log", "/master/./log"):
        found = daemon_log.find(raw)
        assert found is not None and found[1] == "", raw
    found = daemon_log.find("/master/log/x/y")
    assert found is not None and found[1] == "x/y"
    for raw in ("/master/logs", "/master", "master/log", "/slave/log", "/"):
        assert daemon_log.find(raw) is None, raw
    assert daemon_log.attached() == {"/master/log": os.path.realpath(attached_log)}


def test_detached_path_is_not_found(attached_log):
    daemon_log.detach(daemon_log.MASTER_LOG)
    assert daemon_log.find("/master/log") is None
    assert daemon_log.attached() == {}


def test_access_mesos_logs_decides(tmp_path):
    acls = parse_acls(
        '{"access_mesos_logs": [{"principals": {"values": ["ops"]}, "logs": {"type": "ANY"}},'
        ' {"principals": {"type": "ANY"}, "logs": {"type": "NONE"}}]}'
    )
    attachment = daemon_log.Attachment("/master/log", str(tmp_path / "f"), acls)
    assert attachment.refusal("ops") is None
    refusal = attachment.refusal("alice")
    assert refusal is not None and "access_mesos_logs" in refusal
    assert daemon_log.Attachment("/master/log", "/x", Acls()).refusal(None) is None


def test_severity_of_the_logging_level():
    assert [daemon_log.severity(x) for x in ("DEBUG", "INFO", "WARNING", "ERROR")] == [
        "INFO",
        "INFO",
        "WARNING",
        "ERROR",
    ]


def test_log_file_and_its_link(tmp_path):
    directory = tmp_path / "new" / "logs"  # made
    path, stream = daemon_log._open_log_file("butte-master", "INFO", str(directory))
    with stream:
        stream.write("hello\n")
    link = directory / "butte-master.INFO"
    assert os.path.realpath(link) == path
    assert os.path.basename(path).startswith("butte-master.")
    assert ".log.INFO." in os.path.basename(path) and path.endswith(f".{os.getpid()}")
    assert link.read_text() == "hello\n"


def test_unwritable_log_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="--log_dir .*: cannot write a log file there"):
        daemon_log._open_log_file("butte-agent", "INFO", str(blocker / "logs"))


def test_logbufsecs_holds_info_lines_back_until_a_warning_or_the_time_is_up(tmp_path):
    path, stream = daemon_log._open_log_file("butte-master", "INFO", str(tmp_path), buffered=True)
    handler = daemon_log._HeldBack(stream, 0.3)
    log = logging.getLogger("test.logbufsecs")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        written = Path(path).read_text
        log.info("first")
        log.info("second")
        assert written() == ""  # held back
        log.warning("trouble")  # written at once, with what came before
        assert written().splitlines() == ["first", "second", "trouble"]
        log.info("third")
        assert "third" not in written()
        time.sleep(0.35)
        log.info("fourth")  # the oldest held line is past 0.3 s: all out
        assert written().splitlines()[-2:] == ["third", "fourth"]
        log.info("last")
    finally:
        log.removeHandler(handler)
        handler.close()  # at exit nothing is lost
    assert written().splitlines()[-1] == "last"


def test_quiet_and_logbufsecs_are_mesos_flags_of_both_daemons():
    for program in ("butte-master", "butte-agent"):
        parser = argparse.ArgumentParser()
        daemon_log.add_flags(parser, program, "/x/log")
        add_negations(parser)
        assert parser.parse_args([]).quiet is False
        assert parser.parse_args([]).logbufsecs == 0
        assert parser.parse_args(["--quiet"]).quiet is True
        assert parser.parse_args(["--quiet=false"]).quiet is False
        assert parser.parse_args(["--no-quiet"]).quiet is False
        assert parser.parse_args(["--logbufsecs=30"]).logbufsecs == 30
        for bad in (["--logbufsecs=-1"], ["--logbufsecs=1.5"], ["--quiet=maybe"]):
            with pytest.raises(SystemExit):
                parser.parse_args(bad)

"""The agent's authentication flags (`butte.agent.auth_flags`): what they turn into, and the
combinations refused at start with a message that never quotes a secret."""

from __future__ import annotations

import argparse

import pytest

from butte.agent.auth_flags import add_auth_flags, auth_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_auth_flags(parser)
    return parser.parse_args(argv)


def test_defaults_turn_nothing_on() -> None:
    auth = auth_from_args(parse())
    assert not (auth.readonly or auth.readwrite or auth.executors)
    assert auth.executor_key is None and auth.acls.unrestricted("view_tasks")


def test_flags_read_their_files(tmp_path) -> None:
    creds, key = tmp_path / "creds", tmp_path / "key"
    creds.write_text("ops s3cret-value\n")
    key.write_bytes(b"\x00binary key\n")
    acls = '{"view_tasks": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}]}'
    auth = auth_from_args(
        parse(
            "--authenticate_http_readonly",
            "--authenticate_http_executors=true",
            f"--http_credentials={creds}",
            f"--executor_secret_key=file://{key}",
            f"--acls={acls}",
        )
    )
    assert auth.readonly and not auth.readwrite and auth.executors
    assert auth.credentials == {"ops": "s3cret-value"}
    assert auth.executor_key == b"\x00binary key\n"
    assert not auth.acls.unrestricted("view_tasks")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--authenticate_http_readonly"], "need --http_credentials"),
        (["--authenticate_http_executors"], "needs --executor_secret_key"),
        (["--executor_secret_key=/nonexistent/key"], "--executor_secret_key /nonexistent/key"),
        (["--acls", '{"bogus_action": []}'], "unknown ACL action"),
    ],
)
def test_bad_combinations_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auth_from_args(parse(*argv))


def test_empty_key_and_bad_credentials_are_refused_without_quoting(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        auth_from_args(parse(f"--executor_secret_key={key}"))
    creds = tmp_path / "creds"
    creds.write_text('{"credentials": [{"principal": "ops"}], "x": "topsecret"}')
    with pytest.raises(ValueError) as refused:
        auth_from_args(parse("--authenticate_http_readwrite", f"--http_credentials={creds}"))
    assert "topsecret" not in str(refused.value)

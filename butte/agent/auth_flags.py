"""The agent's authentication and authorization flags (Mesos spellings) and the
`AgentAuth` they turn into (`butte.agent.http_auth`)."""

from __future__ import annotations

import argparse

from butte.agent.http_auth import AgentAuth
from butte.core.auth import CredentialsError, parse_credentials
from butte.core.flags import boolean
from butte.master.acls import AclError, Acls, parse_acls


def add_auth_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --authenticate_http_*, --http_credentials, --executor_secret_key, --acls."""
    for name, what in (
        ("authenticate_http_readonly", "read-only endpoints (/state, /files, /metrics ...)"),
        ("authenticate_http_readwrite", "the operator API /api/v1 and every non-GET endpoint"),
        (
            "authenticate_http_executors",
            "executors on the executor API: a Bearer token signed with --executor_secret_key",
        ),
    ):
        parser.add_argument(
            f"--{name}",
            type=boolean,
            nargs="?",
            const=True,
            default=False,
            help=f"require credentials of {what} (default false)",
        )
    parser.add_argument(
        "--http_credentials",
        default=None,
        help="path (or file:// URL) of the credentials --authenticate_http_readonly/readwrite "
        'check: Mesos\' JSON {"credentials":[{"principal":..,"secret":..}]} or '
        '"<principal> <secret>" lines',
    )
    parser.add_argument(
        "--executor_secret_key",
        default=None,
        help="path of the key that signs each executor's token (HS256 JWT naming its "
        "framework, executor and container, in MESOS_EXECUTOR_AUTHENTICATION_TOKEN)",
    )
    parser.add_argument(
        "--acls",
        default=None,
        help="authorization: Mesos' ACL JSON, inline or a path / file:// URL; enforced here: "
        "view_frameworks, view_tasks, view_executors (/state and GET_* leave out what the "
        "caller may not view), access_sandboxes (/files: 403) and the "
        "launch/wait/kill/remove/view_standalone_containers actions; docs/security.md",
    )


def _read(path: str, flag: str) -> bytes:
    path = path[len("file://") :] if path.startswith("file://") else path
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{flag} {path}: {e.strerror}") from None


def _acls(value: str | None) -> Acls:
    if value is None:
        return Acls()
    text = value if value.lstrip().startswith("{") else _read(value, "--acls").decode()
    try:
        return parse_acls(text)
    except AclError as e:
        raise ValueError(f"--acls: {e}") from None


def auth_from_args(args: argparse.Namespace) -> AgentAuth:
    """The `AgentAuth` of parsed flags; ValueError (never quoting a secret) when they do
    not fit together."""
    credentials: dict[str, str] = {}
    if args.authenticate_http_readonly or args.authenticate_http_readwrite:
        if args.http_credentials is None:
            raise ValueError("--authenticate_http_readonly/readwrite need --http_credentials")
        try:
            credentials = parse_credentials(
                _read(args.http_credentials, "--http_credentials").decode()
            )
        except (CredentialsError, UnicodeDecodeError) as e:
            raise ValueError(f"--http_credentials: {e}") from None
    key: bytes | None = None
    if args.executor_secret_key is not None:
        key = _read(args.executor_secret_key, "--executor_secret_key")
        if not key:
            raise ValueError("--executor_secret_key: the key file is empty")
    if args.authenticate_http_executors and key is None:
        raise ValueError("--authenticate_http_executors needs --executor_secret_key")
    return AgentAuth(
        credentials=credentials,
        readonly=args.authenticate_http_readonly,
        readwrite=args.authenticate_http_readwrite,
        executors=args.authenticate_http_executors,
        executor_key=key,
        acls=_acls(args.acls),
    )

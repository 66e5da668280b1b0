"""JSON Web Tokens signed with HMAC-SHA256 (HS256), as Mesos signs executor tokens.

An agent run with ``--executor_secret_key`` gives each executor a token naming its
framework, executor and container (`executor_claims`) in
``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``; with ``--authenticate_http_executors`` the executor
API accepts a call only with ``Authorization: Bearer <token>`` whose claims name the call's
own executor. As Mesos', the tokens carry no expiry: they are valid as long as the key is.

Only what that needs: compact serialization, ``alg`` HS256, signature compared in constant
time. Pure (no I/O).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping

_HEADER = {"alg": "HS256", "typ": "JWT"}
# Where an executor finds its token, as in Mesos.
EXECUTOR_TOKEN_ENV = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN"


class JwtError(ValueError):
    """A token that is malformed, not HS256, or not signed with the key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("token part is not base64url") from None


def _signature(key: bytes, signing_input: str) -> bytes:
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


def encode(claims: Mapping[str, str], key: bytes) -> str:
    """The compact HS256 token of ``claims``."""
    header = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{_b64(_signature(key, signing_input))}"


def decode(token: str, key: bytes) -> dict[str, object]:
    """The claims of a token signed with ``key``; JwtError otherwise (never says why the
    signature failed beyond that)."""
    if len(token) > 8192:
        raise JwtError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("token must have three parts")
    header_b64, payload_b64, signature_b64 = parts
    try:
        signing_input = f"{header_b64}.{payload_b64}"
        signing_input.encode("ascii")
    except UnicodeEncodeError:
        raise JwtError("token is not ASCII") from None
    expected = _signature(key, signing_input)
    if not hmac.compare_digest(expected, _unb64(signature_b64)):
        raise JwtError("token signature is not valid")
    try:
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(payload_b64))
    except (ValueError, RecursionError):
        raise JwtError("token header or payload is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtError("token algorithm must be HS256")
    if not isinstance(claims, dict):
        raise JwtError("token payload must be a JSON object")
    return claims


def executor_claims(framework_id: str, executor_id: str, container_id: str) -> dict[str, str]:
    """The claims of an executor's token: who it is (Mesos' claim names)."""
    return {"fid": framework_id, "eid": executor_id, "cid": container_id}


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()

"""HS256 tokens (`butte.core.jwt`): what the agent signs decodes with the same key only; a
changed payload, header or signature, another algorithm and malformed tokens are refused."""

from __future__ import annotations

import base64
import json

import pytest

from butte.core import jwt

KEY = b"k3y"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_round_trip_and_claims() -> None:
    claims = jwt.executor_claims("fw", "ex", "c1")
    token = jwt.encode(claims, KEY)
    assert jwt.decode(token, KEY) == {"fid": "fw", "eid": "ex", "cid": "c1"}
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "HS256"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: t[:-1],
        lambda t: ".".join([t.split(".")[0], _b64({"fid": "other"}), t.split(".")[2]]),
        lambda t: ".".join([_b64({"alg": "none"}), *t.split(".")[1:]]),
        lambda t: t.rsplit(".", 1)[0] + ".",
        lambda t: "a.b",
        lambda t: "é.b.c",
        lambda t: "x" * 9000,
        lambda t: "",
    ],
)
def test_tampered_or_malformed_tokens_are_refused(mangle) -> None:
    token = jwt.encode(jwt.executor_claims("fw", "ex", "c1"), KEY)
    with pytest.raises(jwt.JwtError):
        jwt.decode(mangle(token), KEY)
    with pytest.raises(jwt.JwtError):
        jwt.decode(token, b"another key")


def test_a_validly_signed_non_hs256_header_is_refused() -> None:
    header, payload = _b64({"alg": "HS512"}), _b64({"fid": "fw"})
    signature = jwt._b64(jwt._signature(KEY, f"{header}.{payload}"))
    with pytest.raises(jwt.JwtError, match="HS256"):
        jwt.decode(f"{header}.{payload}.{signature}", KEY)


def test_bearer_header() -> None:
    assert jwt.bearer_token("Bearer abc") == "abc"
    assert jwt.bearer_token("bearer  abc ") == "abc"
    assert jwt.bearer_token("Basic abc") is None
    assert jwt.bearer_token("Bearer ") is None
    assert jwt.bearer_token(None) is None

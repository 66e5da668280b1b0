"""The HTTP calls the launcher and the node proxy make to the rendezvous service (stdlib only:
both are short-lived processes that should start fast)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

TOKEN_HEADER = "X-Butte-Mpi-Token"


def call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (no body) or POST ``body`` as JSON; (HTTP status, JSON answer or {"error": text}).
    Connection failures raise OSError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header(TOKEN_HEADER, token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode("utf-8", "replace").strip()}

"""HTTP Basic authentication as Mesos does it: credentials files and ``Authorization`` headers.

A credentials file is Mesos' JSON form::

    {"credentials": [{"principal": "ops", "secret": "s3cret"}, ...]}

or its plain-text form, one ``<principal> <secret>`` pair per line (blank lines and ``#``
comments ignored). An agent's ``--credential`` file holds one such pair, as JSON
(``{"principal": ..., "secret": ...}``) or text. Secrets are compared in constant time and
never appear in an error message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping


class CredentialsError(ValueError):
    """A credentials file that cannot be used (its secrets are never quoted)."""


def parse_credentials(text: str) -> dict[str, str]:
    """principal -> secret from a credentials file's text (either form)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise CredentialsError("credentials file is not valid JSON") from None
        items = data.get("credentials") if isinstance(data, dict) else data
        if isinstance(data, dict) and "principal" in data:
            items = [data]  # one credential, as an agent's --credential file holds
        if not isinstance(items, list):
            raise CredentialsError("credentials JSON needs a 'credentials' list")
        out: dict[str, str] = {}
        for item in items:
            if not isinstance(item, dict):
                raise CredentialsError("each credential must be an object")
            principal, secret = item.get("principal"), item.get("secret")
            if not isinstance(principal, str) or not principal or not isinstance(secret, str):
                raise CredentialsError("each credential needs a 'principal' and a 'secret'")
            out[principal] = secret
        return out
    out = {}
    for number, line in enumerate(stripped.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise CredentialsError(f"line {number}: expected '<principal> <secret>'")
        out[parts[0]] = parts[1].strip()
    if not out:
        raise CredentialsError("credentials file holds no credential")
    return out


def parse_credential(text: str) -> tuple[str, str]:
    """The one (principal, secret) of an agent's or a client's ``--credential`` file."""
    creds = parse_credentials(text)
    if len(creds) != 1:
        raise CredentialsError("a --credential file holds exactly one credential")
    return next(iter(creds.items()))


def basic_header(principal: str, secret: str) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    token = base64.b64encode(f"{principal}:{secret}".encode()).decode("ascii")
    return f"Basic {token}"


def authenticated_principal(header: str | None, credentials: Mapping[str, str]) -> str | None:
    """The principal an ``Authorization: Basic ...`` header proves, or None (missing,
    malformed, unknown principal or wrong secret)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    principal, sep, secret = decoded.partition(":")
    expected = credentials.get(principal)
    if not sep or expected is None:
        return None
    if not hmac.compare_digest(secret.encode(), expected.encode()):
        return None
    return principal

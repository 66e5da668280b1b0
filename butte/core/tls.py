"""TLS settings from Mesos' ``LIBPROCESS_SSL_*`` environment variables, as `ssl.SSLContext`s.

Every butte daemon and client reads the same variables Mesos' libprocess reads
(docs/operating.md "TLS"):

* ``LIBPROCESS_SSL_ENABLED``: listeners speak TLS; clients given a bare ``host:port`` use
  ``https``/``wss``.
* ``LIBPROCESS_SSL_CERT_FILE`` / ``LIBPROCESS_SSL_KEY_FILE``: this process's certificate and
  key (PEM), presented by listeners and, when set, by clients.
* ``LIBPROCESS_SSL_CA_FILE`` / ``LIBPROCESS_SSL_CA_DIR``: trusted CAs (default: the system's).
* ``LIBPROCESS_SSL_VERIFY_CERT``: a listener verifies a certificate a client presents; a
  client verifies the server's certificate. Unlike Mesos (whose default is false, no
  verification), a butte client verifies unless this is set to false explicitly.
* ``LIBPROCESS_SSL_REQUIRE_CERT``: a listener refuses clients without a valid certificate.
* ``LIBPROCESS_SSL_SUPPORT_DOWNGRADE``: listeners also take plain HTTP on the same port.
* ``LIBPROCESS_SSL_CIPHERS``: OpenSSL cipher list (TLS 1.2 and below).

Nothing here touches the network; building a context reads the certificate files and
raises `TlsError` with the variable and file named when one is missing or unreadable.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# The first byte of a TLS record carrying a handshake (a ClientHello opens every connection).
TLS_HANDSHAKE_BYTE = 0x16


class TlsError(Exception):
    """A TLS setting is wrong (bad value, missing or unreadable file)."""


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TlsError(f"{name}={value!r}: expected true or false")


@dataclass(frozen=True)
class TlsConfig:
    """The ``LIBPROCESS_SSL_*`` settings of one process."""

    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    ca_dir: str | None = None
    verify_cert: bool | None = None  # None: not set (clients verify, listeners do not ask)
    require_cert: bool = False
    support_downgrade: bool = False
    ciphers: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsConfig:
        """The settings in ``env`` (``os.environ``); TlsError for a malformed boolean."""
        verify = env.get("LIBPROCESS_SSL_VERIFY_CERT")
        return cls(
            enabled=_flag(env, "LIBPROCESS_SSL_ENABLED"),
            cert_file=env.get("LIBPROCESS_SSL_CERT_FILE") or None,
            key_file=env.get("LIBPROCESS_SSL_KEY_FILE") or None,
            ca_file=env.get("LIBPROCESS_SSL_CA_FILE") or None,
            ca_dir=env.get("LIBPROCESS_SSL_CA_DIR") or None,
            verify_cert=None if verify is None else _flag(env, "LIBPROCESS_SSL_VERIFY_CERT"),
            require_cert=_flag(env, "LIBPROCESS_SSL_REQUIRE_CERT"),
            support_downgrade=_flag(env, "LIBPROCESS_SSL_SUPPORT_DOWNGRADE"),
            ciphers=env.get("LIBPROCESS_SSL_CIPHERS") or None,
        )

    def server_context(self) -> ssl.SSLContext:
        """The context of a listener: this process's certificate; client certificates
        required (REQUIRE_CERT), verified when presented (VERIFY_CERT) or not asked for."""
        if not self.cert_file or not self.key_file:
            raise TlsError(
                "LIBPROCESS_SSL_ENABLED needs LIBPROCESS_SSL_CERT_FILE and "
                "LIBPROCESS_SSL_KEY_FILE (PEM certificate and key of this process)"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load_identity(context)
        if self.require_cert:
            context.verify_mode = ssl.CERT_REQUIRED
        elif self.verify_cert:
            context.verify_mode = ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_NONE
        if context.verify_mode != ssl.CERT_NONE:
            self._load_trust(context)
        self._set_ciphers(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """The context of a client: the server's certificate and name are verified against
        the CA file/dir (or the system's CAs) unless VERIFY_CERT is false; this process's
        certificate is presented when one is configured (for REQUIRE_CERT listeners)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.verify_cert is False and not self.require_cert:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            self._load_trust(context)
        if self.cert_file and self.key_file:
            self._load_identity(context)
        self._set_ciphers(context)
        return context

    def _load_identity(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(self.cert_file or "", self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(
                f"cannot load LIBPROCESS_SSL_CERT_FILE={self.cert_file} / "
                f"LIBPROCESS_SSL_KEY_FILE={self.key_file}: {e}"
            ) from None

    def _load_trust(self, context: ssl.SSLContext) -> None:
        if not self.ca_file and not self.ca_dir:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            return
        try:
            context.load_verify_locations(cafile=self.ca_file, capath=self.ca_dir)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(
                f"cannot load LIBPROCESS_SSL_CA_FILE={self.ca_file} / "
                f"LIBPROCESS_SSL_CA_DIR={self.ca_dir}: {e}"
            ) from None

    def _set_ciphers(self, context: ssl.SSLContext) -> None:
        if self.ciphers:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError as e:
                raise TlsError(f"LIBPROCESS_SSL_CIPHERS={self.ciphers!r}: {e}") from None


def client_context_for(scheme: str, env: Mapping[str, str]) -> ssl.SSLContext | None:
    """The client context for a URL of ``scheme`` (``https``/``wss``: TLS; ``http``/``ws``:
    none; no scheme: TLS when LIBPROCESS_SSL_ENABLED), or None for plain HTTP."""
    scheme = scheme.lower()
    if scheme in ("http", "ws"):
        return None
    config = TlsConfig.from_env(env)
    if scheme in ("https", "wss") or config.enabled:
        return config.client_context()
    return None


def uses_tls(scheme: str, env: Mapping[str, str]) -> bool:
    """Whether a URL of ``scheme`` (``""`` for a bare host:port) is spoken over TLS."""
    scheme = scheme.lower()
    if scheme in ("https", "wss"):
        return True
    if scheme in ("http", "ws"):
        return False
    return TlsConfig.from_env(env).enabled

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
* ``LIBPROCESS_SSL_CIPHERS``: OpenSSL cipher list (TLS 1.2); ``LIBPROCESS_SSL_ECDH_CURVE``
  (``auto`` or one curve name).
* ``LIBPROCESS_SSL_ENABLE_TLS_V1_2`` / ``_V1_3`` (both on by default); the older protocols
  (``ENABLE_SSL_V3``, ``ENABLE_TLS_V1_0``, ``_V1_1``) cannot be turned on.
* ``LIBPROCESS_SSL_VERIFY_SERVER_CERT`` / ``LIBPROCESS_SSL_REQUIRE_CLIENT_CERT`` (Mesos' later
  names): VERIFY_CERT for clients only, REQUIRE_CERT for listeners only.
* ``LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME``: only ``openssl`` (the certificate's names
  are checked); Mesos' ``legacy`` reverse-DNS scheme is refused.

Any other ``LIBPROCESS_SSL_*`` variable (``VERIFY_DEPTH``, ``VERIFY_IPADD`` ...) is refused
rather than ignored.

Nothing here touches the network; building a context reads the certificate files and
raises `TlsError` with the variable and file named when one is missing or unreadable.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_PREFIX = "LIBPROCESS_SSL_"
_KNOWN = frozenset(
    _PREFIX + name
    for name in (
        "ENABLED",
        "CERT_FILE",
        "KEY_FILE",
        "CA_FILE",
        "CA_DIR",
        "VERIFY_CERT",
        "REQUIRE_CERT",
        "VERIFY_SERVER_CERT",
        "REQUIRE_CLIENT_CERT",
        "SUPPORT_DOWNGRADE",
        "CIPHERS",
        "ECDH_CURVE",
        "ENABLE_SSL_V3",
        "ENABLE_TLS_V1_0",
        "ENABLE_TLS_V1_1",
        "ENABLE_TLS_V1_2",
        "ENABLE_TLS_V1_3",
        "HOSTNAME_VALIDATION_SCHEME",
    )
)
TLS1_2, TLS1_3 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
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
    verify_server_cert: bool | None = None  # clients only; None: as verify_cert
    require_cert: bool = False
    support_downgrade: bool = False
    ciphers: str | None = None
    ecdh_curve: str | None = None
    tls_v1_2: bool = True
    tls_v1_3: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsConfig:
        """The settings in ``env`` (``os.environ``); TlsError for a malformed boolean."""
        unknown = sorted(k for k in env if k.startswith(_PREFIX) and k not in _KNOWN)
        if unknown:
            raise TlsError(f"{', '.join(unknown)}: not supported by butte (docs/operating.md)")
        for old in ("LIBPROCESS_SSL_ENABLE_SSL_V3", "LIBPROCESS_SSL_ENABLE_TLS_V1_0"):
            if _flag(env, old):
                raise TlsError(f"{old}: protocols older than TLS 1.2 are not supported")
        if _flag(env, "LIBPROCESS_SSL_ENABLE_TLS_V1_1"):
            raise TlsError("LIBPROCESS_SSL_ENABLE_TLS_V1_1: TLS 1.1 is not supported")
        scheme = env.get("LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME", "openssl")
        if scheme.strip().lower() != "openssl":
            raise TlsError(
                f"LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME={scheme!r}: only 'openssl' "
                "(names checked against the certificate) is supported"
            )
        verify, verify_server = "LIBPROCESS_SSL_VERIFY_CERT", "LIBPROCESS_SSL_VERIFY_SERVER_CERT"
        return cls(
            enabled=_flag(env, "LIBPROCESS_SSL_ENABLED"),
            cert_file=env.get("LIBPROCESS_SSL_CERT_FILE") or None,
            key_file=env.get("LIBPROCESS_SSL_KEY_FILE") or None,
            ca_file=env.get("LIBPROCESS_SSL_CA_FILE") or None,
            ca_dir=env.get("LIBPROCESS_SSL_CA_DIR") or None,
            verify_cert=_flag(env, verify) if verify in env else None,
            verify_server_cert=_flag(env, verify_server) if verify_server in env else None,
            require_cert=_flag(env, "LIBPROCESS_SSL_REQUIRE_CERT")
            or _flag(env, "LIBPROCESS_SSL_REQUIRE_CLIENT_CERT"),
            support_downgrade=_flag(env, "LIBPROCESS_SSL_SUPPORT_DOWNGRADE"),
            ciphers=env.get("LIBPROCESS_SSL_CIPHERS") or None,
            ecdh_curve=env.get("LIBPROCESS_SSL_ECDH_CURVE") or None,
            tls_v1_2=_flag(env, "LIBPROCESS_SSL_ENABLE_TLS_V1_2", True),
            tls_v1_3=_flag(env, "LIBPROCESS_SSL_ENABLE_TLS_V1_3", True),
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
        verify = self.verify_cert if self.verify_server_cert is None else self.verify_server_cert
        if verify is False:
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
        """Protocol versions, ciphers and curve (every context, client or listener)."""
        if not self.tls_v1_2 and not self.tls_v1_3:
            raise TlsError("LIBPROCESS_SSL_ENABLE_TLS_V1_2 and _V1_3 are both off: no protocol")
        versions = [v for v, on in ((TLS1_2, self.tls_v1_2), (TLS1_3, self.tls_v1_3)) if on]
        context.minimum_version, context.maximum_version = versions[0], versions[-1]
        if self.ecdh_curve and self.ecdh_curve.lower() != "auto":
            try:
                context.set_ecdh_curve(self.ecdh_curve)
            except (ValueError, ssl.SSLError) as e:
                raise TlsError(f"LIBPROCESS_SSL_ECDH_CURVE={self.ecdh_curve!r}: {e}") from None
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

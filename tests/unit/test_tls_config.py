"""LIBPROCESS_SSL_* settings (butte.core.tls) and how listeners and clients use them."""

from __future__ import annotations

import ssl

import pytest

from butte.agent.flags import master_address, master_tls
from butte.core.tls import TlsConfig, TlsError, client_context_for, uses_tls
from butte.core.tls_listener import TlsListen, is_local
from butte.testing.tls import Pki, make_pki, tls_env


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def test_defaults_are_off_and_booleans_are_checked() -> None:
    config = TlsConfig.from_env({})
    assert not config.enabled and config.verify_cert is None and not config.support_downgrade
    assert TlsConfig.from_env({"LIBPROCESS_SSL_ENABLED": "1"}).enabled
    assert TlsConfig.from_env({"LIBPROCESS_SSL_VERIFY_CERT": "false"}).verify_cert is False
    with pytest.raises(TlsError, match="LIBPROCESS_SSL_ENABLED='maybe'"):
        TlsConfig.from_env({"LIBPROCESS_SSL_ENABLED": "maybe"})
    assert TlsListen.from_env({}) is None


def test_a_listener_needs_its_certificate_and_key(pki) -> None:
    with pytest.raises(TlsError, match="LIBPROCESS_SSL_KEY_FILE"):
        TlsConfig(enabled=True, cert_file=pki.cert).server_context()
    with pytest.raises(TlsError, match="cannot load LIBPROCESS_SSL_CERT_FILE"):
        TlsConfig(enabled=True, cert_file=pki.ca, key_file=pki.key).server_context()
    with pytest.raises(TlsError, match="LIBPROCESS_SSL_CA_FILE=/nonexistent"):
        TlsConfig(ca_file="/nonexistent").client_context()


def test_listener_verification_follows_verify_and_require(pki) -> None:
    base = {"cert_file": pki.cert, "key_file": pki.key, "ca_file": pki.ca}
    assert TlsConfig(**base).server_context().verify_mode == ssl.CERT_NONE
    verify = TlsConfig(**base, verify_cert=True).server_context()
    assert verify.verify_mode == ssl.CERT_OPTIONAL
    assert TlsConfig(**base, require_cert=True).server_context().verify_mode == ssl.CERT_REQUIRED
    listen = TlsListen.from_env(tls_env(pki, LIBPROCESS_SSL_SUPPORT_DOWNGRADE="yes"))
    assert listen is not None and listen.downgrade


def test_clients_verify_unless_told_not_to(pki) -> None:
    default = TlsConfig(ca_file=pki.ca).client_context()
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    off = TlsConfig.from_env({"LIBPROCESS_SSL_VERIFY_CERT": "false"}).client_context()
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_the_scheme_or_enabled_decides_tls() -> None:
    enabled = {"LIBPROCESS_SSL_ENABLED": "true", "LIBPROCESS_SSL_VERIFY_CERT": "false"}
    assert client_context_for("http", enabled) is None
    assert client_context_for("", {}) is None
    assert client_context_for("", enabled) is not None
    assert client_context_for("https", {"LIBPROCESS_SSL_VERIFY_CERT": "false"}) is not None
    assert uses_tls("wss", {}) and not uses_tls("ws", enabled) and uses_tls("", enabled)


def test_agent_master_flag_takes_https() -> None:
    assert master_address("https://127.0.0.1:5050/") == "https://127.0.0.1:5050"
    assert master_address("http://127.0.0.1") == "127.0.0.1:5050"
    address, context = master_tls("https://127.0.0.1:5050", {"LIBPROCESS_SSL_VERIFY_CERT": "0"})
    assert address == "127.0.0.1:5050" and context is not None
    assert master_tls("127.0.0.1:5050", {}) == ("127.0.0.1:5050", None)


def test_local_peers() -> None:
    assert is_local(("127.0.0.1", 5), ("10.0.0.2", 5051))
    assert is_local(("::1", 5, 0, 0), ("::1", 5051, 0, 0))
    assert is_local(("10.0.0.2", 5), ("10.0.0.2", 5051))
    assert not is_local(("10.0.0.3", 5), ("10.0.0.2", 5051))
    assert not is_local(None, None)


def test_settings_butte_cannot_honour_are_refused(pki) -> None:
    with pytest.raises(TlsError, match="LIBPROCESS_SSL_VERIFY_DEPTH: not supported"):
        TlsConfig.from_env({"LIBPROCESS_SSL_VERIFY_DEPTH": "4"})
    with pytest.raises(TlsError, match="older than TLS 1.2"):
        TlsConfig.from_env({"LIBPROCESS_SSL_ENABLE_TLS_V1_0": "true"})
    with pytest.raises(TlsError, match="only 'openssl'"):
        TlsConfig.from_env({"LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME": "legacy"})
    with pytest.raises(TlsError, match="LIBPROCESS_SSL_ECDH_CURVE='nocurve'"):
        TlsConfig(ecdh_curve="nocurve").client_context()
    only_13 = TlsConfig.from_env({"LIBPROCESS_SSL_ENABLE_TLS_V1_2": "false"}).client_context()
    assert only_13.minimum_version == ssl.TLSVersion.TLSv1_3
    both = TlsConfig.from_env({"LIBPROCESS_SSL_ECDH_CURVE": "prime256v1"}).client_context()
    assert both.minimum_version == ssl.TLSVersion.TLSv1_2
    assert both.maximum_version == ssl.TLSVersion.TLSv1_3


def test_later_mesos_names_split_client_and_listener(pki) -> None:
    env = {"LIBPROCESS_SSL_VERIFY_SERVER_CERT": "false", "LIBPROCESS_SSL_VERIFY_CERT": "true"}
    assert TlsConfig.from_env(env).client_context().verify_mode == ssl.CERT_NONE
    listener = TlsConfig.from_env(
        {**tls_env(pki), "LIBPROCESS_SSL_VERIFY_CERT": "false"}
        | {"LIBPROCESS_SSL_REQUIRE_CLIENT_CERT": "true"}
    )
    assert listener.server_context().verify_mode == ssl.CERT_REQUIRED

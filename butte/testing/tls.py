"""A throw-away CA and certificates for tests of TLS (made at run time with `cryptography`).

`make_pki(directory)` writes ``ca.pem``, a server/client certificate for ``localhost`` and
``127.0.0.1`` signed by it (``cert.pem``/``key.pem``), and a second, unrelated CA
(``other-ca.pem``) for tests that need a client which does not trust the first one;
`tls_env` gives the ``LIBPROCESS_SSL_*`` variables that use them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from butte.testing.require import require_module


@dataclass(frozen=True)
class Pki:
    """Paths of the files `make_pki` wrote."""

    ca: str
    cert: str
    key: str
    other_ca: str


def make_pki(directory: str) -> Pki:
    """A CA, a certificate it signed for localhost/127.0.0.1 (server and client use), and
    another CA, as PEM files under ``directory``."""
    require_module("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def ca_certificate(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca_certificate("butte test CA")
    other_cert, _ = ca_certificate("butte other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca=os.path.join(directory, "ca.pem"),
        cert=os.path.join(directory, "cert.pem"),
        key=os.path.join(directory, "key.pem"),
        other_ca=os.path.join(directory, "other-ca.pem"),
    )
    files = {
        pki.ca: ca_cert.public_bytes(pem),
        pki.cert: cert.public_bytes(pem),
        pki.key: key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        pki.other_ca: other_cert.public_bytes(pem),
    }
    for path, data in files.items():
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
    return pki


def tls_env(pki: Pki, ca: str | None = None, **extra: str) -> dict[str, str]:
    """``LIBPROCESS_SSL_*`` variables for a process using ``pki`` (``ca``: another CA file
    to trust instead); ``extra`` adds or overrides variables (``LIBPROCESS_SSL_...=...``)."""
    return {
        "LIBPROCESS_SSL_ENABLED": "true",
        "LIBPROCESS_SSL_CERT_FILE": pki.cert,
        "LIBPROCESS_SSL_KEY_FILE": pki.key,
        "LIBPROCESS_SSL_CA_FILE": ca or pki.ca,
        "LIBPROCESS_SSL_VERIFY_CERT": "true",
        **extra,
    }

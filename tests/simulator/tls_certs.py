"""A throw-away certificate authority and server certificate for the simulator's TLS port.

The real upstream is only reachable over TLS, and a browser-grade client (curl_cffi) shows
its fingerprint only in a TLS ClientHello, so the simulator serves TLS too. Nothing here is
a secret worth keeping: each simulator process makes a fresh CA at start-up (`cryptography`)
and writes it to `<dir>/ca.pem`, the file a test hands the gateway as `UPSTREAM_CA_BUNDLE`.
The server certificate names `localhost`, `127.0.0.1` and `::1`.

The server context issues no session tickets (`num_tickets = 0`): a resumed TLS 1.3
session adds the `pre_shared_key` extension, which would change a client's JA4 between its
first and later connections. Cloudflare copes with that; the simulator keeps one
fingerprint per client instead. ALPN offers only `http/1.1` (websockets speaks nothing
else), so a client that offers `h2` first falls back, as it does behind any HTTP/1.1 origin.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
VALID = datetime.timedelta(days=2)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID)
    )


def write_certificates(directory: Path) -> Path:
    """Make a CA and a server certificate signed by it in `directory`; returns the CA's PEM path."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("chathub-gateway simulator test CA")
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server = (
        _builder(_name("localhost"), ca_name, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / CA_FILE).write_bytes(ca.public_bytes(pem))
    (directory / CERT_FILE).write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    key_path = directory / KEY_FILE
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return directory / CA_FILE


def server_context(directory: Path) -> ssl.SSLContext:
    """The TLS server context for certificates `write_certificates` made in `directory`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
    context.set_alpn_protocols(["http/1.1"])
    context.num_tickets = 0  # no resumption: one JA4 per client (module docstring)
    context.options |= ssl.OP_NO_TICKET
    return context

"""TLS contexts for the listeners, and the self-signed certificate of the embedded default."""

from __future__ import annotations

import asyncio.sslproto
import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 at least, no compression, no renegotiation; the ssl module's defaults otherwise."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert, key)
    return context


TLS_READ_BUFFER = 16 * 1024 + 256  # one TLS record and its header fit


def trim_asyncio_tls_buffers() -> None:
    """asyncio's own TLS layer gives every connection a 256 KiB receive buffer up front
    (`SSLProtocol.max_size`), sized for bulk uploads; a POP3 client sends short commands, and
    20,000 TLS sessions would hold 5 GB in those buffers. One record's worth is enough: the
    socket is then read in chunks of that size. uvloop's TLS layer is its own, unaffected."""
    protocol = asyncio.sslproto.SSLProtocol
    protocol.max_size = min(protocol.max_size, TLS_READ_BUFFER)


def generate_self_signed(
    cert: Path, key: Path, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")
) -> None:
    """A P-256 key and a certificate for `names`, valid ten years, written as PEM (key 0600)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    key.touch(mode=0o600)
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

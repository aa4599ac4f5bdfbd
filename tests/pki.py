"""Test certificates (a private CA and a server certificate) and a TLS terminator
(a plain mitmdump in reverse mode) to put an S3 server behind TLS."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import (
    Backend,
    ManagedProcess,
    StartupError,
    child_env,
    find_executable,
    free_port,
    wait_until,
)


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate clients trust
    certificate: Path  # the leaf (localhost, 127.0.0.1), signed by the CA
    key: Path
    combined: Path  # leaf + key in one PEM file, as mitmproxy's ``certs`` wants


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path, label: str, names: tuple[str, ...] = ()) -> Pki:
    """A private CA and a server certificate for localhost, 127.0.0.1 and ``names``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} test CA"))
        .issuer_name(_name(f"{label} test CA"))
        .public_key(ca_key.public_key())
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    *(x509.DNSName(name) for name in names),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pki = Pki(
        ca=directory / f"{label}-ca.pem",
        certificate=directory / f"{label}-cert.pem",
        key=directory / f"{label}-key.pem",
        combined=directory / f"{label}-combined.pem",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.certificate.write_bytes(cert_pem)
    pki.key.write_bytes(key_pem)
    pki.combined.write_bytes(cert_pem + key_pem)
    return pki


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_tls_terminator(
    backend: Backend, work_dir: Path, names: tuple[str, ...] = ()
) -> tuple[Backend, Pki]:
    """``backend`` behind TLS at ``https://127.0.0.1:<port>`` (also ``localhost``
    and ``names`` in its certificate).

    The returned Backend's process is the terminator; its certificate is
    signed by the returned Pki's CA.
    """
    pki = make_pki(work_dir, "backend", names)
    port = free_port()
    argv = [
        find_executable("mitmdump"),
        "--mode",
        f"reverse:{backend.endpoint_url}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--set",
        f"confdir={work_dir / 'terminator'}",
        "--set",
        f"certs=*={pki.combined}",
        "--set",
        "keep_host_header=true",
        "--flow-detail",
        "0",
    ]
    process = ManagedProcess("tls-terminator", argv, work_dir / "terminator.log", env=child_env())
    try:
        wait_until(lambda: process.check_alive() or listening(port), 30, what="TLS terminator")
    except (StartupError, TimeoutError):
        process.stop()
        raise
    terminated = Backend(
        name=f"{backend.name}-tls",
        endpoint_url=f"https://127.0.0.1:{port}",
        access_key_id=backend.access_key_id,
        secret_access_key=backend.secret_access_key,
        process=process,
        region=backend.region,
    )
    return terminated, pki

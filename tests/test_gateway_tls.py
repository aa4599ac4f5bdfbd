"""TLS on both sides of the reverse proxy: the gateway presents the certificate
and key from its config, and verifies an https backend against ``backend.ca_bundle``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.harness import GATEWAY_USER, Backend, GatewayFactory, make_bucket, s3_client
from tests.pki import make_pki, start_tls_terminator


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def tls_backend(moto_backend: Backend, pki_dir: Path) -> Iterator[Backend]:
    """moto behind a TLS terminator whose certificate comes from a private CA."""
    backend, _ = start_tls_terminator(moto_backend, pki_dir)
    try:
        yield backend
    finally:
        backend.process.stop()


def test_boto3_over_tls_with_the_configured_certificate_to_a_verified_tls_backend(
    moto_backend: Backend,
    tls_backend: Backend,
    gateway_factory: GatewayFactory,
    pki_dir: Path,
) -> None:
    client_side = make_pki(pki_dir, "gateway")
    backend_ca = pki_dir / "backend-ca.pem"
    gateway = gateway_factory(
        tls_backend,
        {
            "tls": {"certificate": str(client_side.certificate), "key": str(client_side.key)},
            "backend": {"ca_bundle": str(backend_ca)},
        },
    )
    bucket = make_bucket(moto_backend, prefix="tls")
    s3 = s3_client(
        gateway.https_url,
        GATEWAY_USER,
        region=tls_backend.region,
        verify=str(client_side.ca),
    )
    body = b"over TLS on both sides " * 5000
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    # CopyObject makes the gateway HEAD the source itself (addons/backend.py).
    s3.copy_object(Bucket=bucket, Key="k2", CopySource={"Bucket": bucket, "Key": "k"})
    assert s3.get_object(Bucket=bucket, Key="k2")["Body"].read() == body
    stored = moto_backend.client().get_object(Bucket=bucket, Key="k")["Body"].read()
    assert body[:64] not in stored


def test_a_backend_certificate_outside_the_ca_bundle_is_refused(
    tls_backend: Backend, gateway_factory: GatewayFactory, moto_backend: Backend
) -> None:
    # No ca_bundle: the system's CAs do not know the backend's private CA.
    gateway = gateway_factory(tls_backend)
    bucket = make_bucket(moto_backend, prefix="tls")
    raw = gateway.client()
    with pytest.raises(ClientError) as failure:
        raw.put_object(Bucket=bucket, Key="k", Body=b"never stored")
    assert failure.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert "Contents" not in moto_backend.client().list_objects_v2(Bucket=bucket)

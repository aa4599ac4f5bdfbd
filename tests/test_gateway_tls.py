"""TLS on both sides of the reverse proxy: the gateway presents the certificate
and key from its config, and verifies an https backend against ``backend.ca_bundle``."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.harness import GATEWAY_USER, Backend, GatewayFactory, make_bucket, s3_client
from tests.pki import make_pki, start_tls_terminator
from tests.rawclient import pieces_of, send, sign


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


@pytest.mark.parametrize("client_tls", [False, True], ids=["http-client", "https-client"])
def test_a_streamed_upload_failing_its_digest_to_a_tls_backend_is_answered(
    moto_backend: Backend,
    tls_backend: Backend,
    gateway_factory: GatewayFactory,
    pki_dir: Path,
    client_tls: bool,
) -> None:
    """The digest is checked at the end of the body; the backend, over TLS, never
    gets the last piece and its connection is closed. A plain-HTTP client gets
    S3's answer; a TLS client mitmproxy's own 502 page (only mitmproxy writes to
    its TLS connections). Nothing is stored."""
    # Its own files: make_pki rewrites them, and a cached gateway keeps the first.
    client_side = make_pki(pki_dir, f"gateway-digest-{client_tls}")
    gateway = gateway_factory(
        tls_backend,
        {
            "tls": {"certificate": str(client_side.certificate), "key": str(client_side.key)},
            "backend": {"ca_bundle": str(pki_dir / "backend-ca.pem")},
        },
    )
    bucket = make_bucket(moto_backend, prefix="tls")
    body = os.urandom(2 * 1024 * 1024)  # streamed: above the 1 MiB read whole
    wrong_md5 = base64.b64encode(hashlib.md5(body + b"!").digest()).decode()
    url = f"{gateway.https_url if client_tls else gateway.url}/{bucket}/k"
    headers = sign("PUT", url, GATEWAY_USER, body=body, headers=[("Content-MD5", wrong_md5)])
    ca_file = client_side.ca if client_tls else None
    response = send(url, "PUT", headers, pieces_of(body, 64 * 1024), ca_file=ca_file)
    if client_tls:
        assert response.status == 502, response.body[:300]
    else:
        assert response.status == 400, response.body[:300]
        error = response.error()
        assert error["Code"] == "BadDigest" and error["RequestId"]
    assert moto_backend.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0

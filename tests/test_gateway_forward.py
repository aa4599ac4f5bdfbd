"""Forward-proxy mode for apps that keep their S3 endpoint: boto3 with ``proxies``
and the gateway's CA reaches an https backend addressed by host name (``localhost``,
or ``<bucket>.s3.localhost`` in virtual-hosted style)."""

from __future__ import annotations

import http.client
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.config import Config

from tests.harness import (
    GATEWAY_SCRIPT,
    GATEWAY_USER,
    REPO_ROOT,
    Backend,
    ManagedProcess,
    StartupError,
    child_env,
    deep_merge,
    default_gateway_config,
    find_executable,
    free_port,
    make_bucket,
    s3_client,
    wait_until,
)
from tests.pki import Pki, listening, start_tls_terminator

# A certificate name needs two labels after its wildcard: "*.localhost" is refused.
VIRTUAL_HOST_NAMES = ("s3.localhost", "*.s3.localhost")


class ForwardGateway:
    """``mitmdump -s addons/gateway.py --mode regular``: an HTTP(S) proxy."""

    def __init__(self, work_dir: Path, config: dict[str, Any]) -> None:
        # Bucket host names (<bucket>.s3.localhost) must resolve in the gateway.
        # (A directory of its own: mitmproxy puts a script's directory on sys.path.)
        resolver = Path(__file__).parent / "scripts" / "localhost_names.py"
        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.confdir = work_dir / "mitmproxy"
        self.port = free_port()
        argv = [
            find_executable("mitmdump"),
            "-s",
            str(resolver),
            "-s",
            str(GATEWAY_SCRIPT),
            "--mode",
            "regular",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            "--set",
            f"gw_config={config_path}",
        ]
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.process = ManagedProcess(
            "forward-gateway",
            argv,
            work_dir / "gateway.log",
            env=child_env(PYTHONPATH=python_path),
            cwd=REPO_ROOT,
        )
        try:
            wait_until(
                lambda: self.process.check_alive() or listening(self.port), 30, what="gateway"
            )
        except (StartupError, TimeoutError) as error:
            self.process.stop()
            raise StartupError(f"{error}\n{self.process.describe()}") from error

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def proxied_get(self, url_host: str, port: int, path: str = "/") -> tuple[int, bytes]:
        """A plain-HTTP GET through the proxy (absolute-form request)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", f"http://{url_host}:{port}{path}")
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def tls_backend(
    moto_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Pki]]:
    backend, pki = start_tls_terminator(
        moto_backend, tmp_path_factory.mktemp("forward-pki"), VIRTUAL_HOST_NAMES
    )
    try:
        yield backend, pki
    finally:
        backend.process.stop()


def _config(moto_backend: Backend, pki: Pki, other_hosts: str) -> dict[str, Any]:
    return deep_merge(
        default_gateway_config(moto_backend),
        {
            "backend": {"ca_bundle": str(pki.ca)},
            # s3.localhost: an endpoint whose subdomains are buckets (virtual-hosted style).
            "forward": {
                "allowed_hosts": ["localhost", "*.localhost", "s3.localhost"],
                "other_hosts": other_hosts,
            },
        },
    )


@pytest.fixture(scope="module")
def forward_gateway(
    moto_backend: Backend,
    tls_backend: tuple[Backend, Pki],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ForwardGateway]:
    _, pki = tls_backend
    gateway = ForwardGateway(
        tmp_path_factory.mktemp("forward-refuse"), _config(moto_backend, pki, "refuse")
    )
    try:
        yield gateway
    finally:
        gateway.process.stop()


def _backend_port(backend: Backend) -> int:
    return int(backend.endpoint_url.rsplit(":", 1)[1])


def test_boto3_through_the_forward_proxy_to_a_backend_named_by_host(
    moto_backend: Backend,
    tls_backend: tuple[Backend, Pki],
    forward_gateway: ForwardGateway,
) -> None:
    backend, _ = tls_backend
    bucket = make_bucket(moto_backend, prefix="fwd")
    # The app's own endpoint and credentials; only the proxy and the CA change.
    app = s3_client(
        f"https://localhost:{_backend_port(backend)}",
        GATEWAY_USER,
        region=backend.region,
        verify=str(forward_gateway.ca_cert_path),
        config=Config(proxies={"https": forward_gateway.proxy_url}),
    )
    body = b"legacy app, unchanged endpoint " * 4000
    app.put_object(Bucket=bucket, Key="k", Body=body, Metadata={"m": "v"})
    answer = app.get_object(Bucket=bucket, Key="k")
    assert answer["Body"].read() == body
    assert answer["Metadata"] == {"m": "v"}
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"
    assert app.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(body)
    assert [o["Key"] for o in app.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    stored = moto_backend.client().get_object(Bucket=bucket, Key="k")
    assert "s3gw" in stored["Metadata"]
    assert body[:64] not in stored["Body"].read()


def test_virtual_hosted_style_through_the_forward_proxy(
    moto_backend: Backend,
    tls_backend: tuple[Backend, Pki],
    forward_gateway: ForwardGateway,
) -> None:
    """``<bucket>.s3.localhost``: the bucket comes from the host, for crypto, auth and
    re-signing, listings, multipart uploads and a REPLACE copy (a side request)."""
    backend, _ = tls_backend
    bucket = make_bucket(moto_backend, prefix="fwdv")
    app = s3_client(
        f"https://s3.localhost:{_backend_port(backend)}",
        GATEWAY_USER,
        region=backend.region,
        verify=str(forward_gateway.ca_cert_path),
        config=Config(
            proxies={"https": forward_gateway.proxy_url}, s3={"addressing_style": "virtual"}
        ),
    )
    body = b"virtual-hosted style " * 3000
    put = app.put_object(Bucket=bucket, Key="dir/k", Body=body, Metadata={"m": "v"})
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    answer = app.get_object(Bucket=bucket, Key="dir/k", Range="bytes=100-199")
    assert answer["Body"].read() == body[100:200]
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"
    assert app.head_object(Bucket=bucket, Key="dir/k")["ContentLength"] == len(body)
    listed = app.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("dir/k", len(body))]
    app.copy_object(
        Bucket=bucket,
        Key="copy",
        CopySource={"Bucket": bucket, "Key": "dir/k"},
        MetadataDirective="REPLACE",
        Metadata={"m": "w"},
    )
    assert app.get_object(Bucket=bucket, Key="copy")["Body"].read() == body
    part = os.urandom(5 * 1024 * 1024)
    upload = app.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [
        app.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=data)["ETag"]
        for n, data in ((1, part), (2, b"tail"))
    ]
    app.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    assert app.get_object(Bucket=bucket, Key="mp")["Body"].read() == part + b"tail"
    for key in ("dir/k", "copy", "mp"):
        stored = moto_backend.client().get_object(Bucket=bucket, Key=key)
        assert "s3gw" in stored["Metadata"], key
        assert body[:64] not in stored["Body"].read()
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        s3_client(
            f"https://s3.localhost:{_backend_port(backend)}",
            type(GATEWAY_USER)(GATEWAY_USER.access_key_id, "not-the-secret"),
            region=backend.region,
            verify=str(forward_gateway.ca_cert_path),
            config=Config(
                proxies={"https": forward_gateway.proxy_url}, s3={"addressing_style": "virtual"}
            ),
        ).get_object(Bucket=bucket, Key="dir/k")


def test_a_bad_signature_is_refused_in_forward_mode(
    tls_backend: tuple[Backend, Pki], forward_gateway: ForwardGateway, moto_backend: Backend
) -> None:
    backend, _ = tls_backend
    bucket = make_bucket(moto_backend, prefix="fwd")
    app = s3_client(
        f"https://localhost:{_backend_port(backend)}",
        type(GATEWAY_USER)(GATEWAY_USER.access_key_id, "not-the-secret"),
        region=backend.region,
        verify=str(forward_gateway.ca_cert_path),
        config=Config(proxies={"https": forward_gateway.proxy_url}),
    )
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        app.put_object(Bucket=bucket, Key="k", Body=b"x")


def test_hosts_outside_the_allow_list_are_refused(
    moto_backend: Backend, forward_gateway: ForwardGateway
) -> None:
    status, body = forward_gateway.proxied_get("127.0.0.1", _backend_port(moto_backend))
    assert status == 403
    assert b"not an S3 host" in body


def test_other_hosts_pass_untouched_when_configured(
    moto_backend: Backend,
    tls_backend: tuple[Backend, Pki],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    backend, pki = tls_backend
    gateway = ForwardGateway(
        tmp_path_factory.mktemp("forward-pass"), _config(moto_backend, pki, "pass")
    )
    try:
        # Plain HTTP: the backend's own answer (an unsigned ListBuckets), not the gateway's.
        status, body = gateway.proxied_get("127.0.0.1", _backend_port(moto_backend))
        assert status == 200 and b"ListAllMyBucketsResult" in body
        # TLS is not intercepted: the client sees the backend's certificate.
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            gateway.port,
            timeout=10,
            context=ssl.create_default_context(cafile=str(pki.ca)),
        )
        conn.set_tunnel("127.0.0.1", _backend_port(backend))
        try:
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    finally:
        gateway.process.stop()

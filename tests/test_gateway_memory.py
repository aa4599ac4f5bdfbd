"""Memory stays bounded whatever the object size: a 1 GiB PUT and GET through the gateway."""

from __future__ import annotations

import hashlib
import http.client
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from botocore.config import Config

from crypto import ciphertext_length
from tests.harness import CHUNK_SIZE, Backend, GatewayFactory, make_bucket

GIB = 1024**3
BLOCK = 1024 * 1024
RSS_LIMIT = 200 * 1024 * 1024


def _blocks(total: int, seed: bytes) -> Iterator[bytes]:
    """Deterministic, incompressible data generated on the fly (never held whole)."""
    for index in range(total // BLOCK):
        yield index.to_bytes(8, "big") + seed[8:]


def _send(
    method: str, url: str, body: Iterator[bytes] | None, length: int
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    target = parts.path + ("?" + parts.query if parts.query else "")
    headers = {"Content-Length": str(length)} if body is not None else {}
    conn.request(method, target, body=body, headers=headers)
    return conn.getresponse()


@pytest.mark.slow
def test_one_gib_put_and_get_stay_under_200_mib_rss(
    rclone_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    gateway = gateway_factory(rclone_backend, fresh=True)
    bucket = make_bucket(rclone_backend, prefix="memory")
    s3 = gateway.client(config=Config(signature_version="s3v4"))
    seed = os.urandom(BLOCK)
    expected = hashlib.sha256()
    for block in _blocks(GIB, seed):
        expected.update(block)

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "1gib"})
    response = _send("PUT", put_url, _blocks(GIB, seed), GIB)
    assert response.status == 200, response.read()
    response.read()
    put_peak = gateway.peak_rss_bytes()

    stored = rclone_backend.client().head_object(Bucket=bucket, Key="1gib")
    assert stored["ContentLength"] == ciphertext_length(GIB, CHUNK_SIZE)

    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "1gib"})
    response = _send("GET", get_url, None, 0)
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == GIB
    got = hashlib.sha256()
    while piece := response.read(BLOCK):
        got.update(piece)
    assert got.hexdigest() == expected.hexdigest()
    peak = gateway.peak_rss_bytes()
    print(
        f"gateway peak RSS: after 1 GiB PUT {put_peak / 2**20:.0f} MiB, "
        f"after GET {peak / 2**20:.0f} MiB"
    )
    assert peak < RSS_LIMIT
    gateway.stop()

"""Faults between client, gateway and backend never lose or corrupt an object.

A TCP fault proxy (``tests/faultproxy.py``) sits between the gateway and the
backend, or between the client and the gateway. After each fault the object
read back through the gateway must be the previous version or the complete
new one, decrypting to exactly what a client sent. Backend failures reach the
client as S3 XML errors with a request id, or, once a download has started,
as a transfer cut short: never as a short body that looks complete.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.faultproxy import PASS, Direction, Fault, FaultProxy, Faulty, Kind
from tests.harness import GATEWAY_USER, Backend, Gateway, GatewayFactory, free_port, make_bucket
from tests.rawclient import (
    STREAMING_SIGNED,
    RawResponse,
    exchange,
    pieces_of,
    send,
    sign,
    signed_chunks,
    signed_put_head,
)
from tests.test_gateway_tamper import fetch

SMALL = 200_000  # read whole by the gateway (<= 1 MiB)
LARGE = 3 * 1024 * 1024  # streamed
SIZES = pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
KEY = "obj"
CUT_ERRORS = (ConnectionError, http.client.HTTPException, OSError)


@pytest.fixture
def client_proxy(gateway: Gateway) -> Iterator[FaultProxy]:
    """A fault proxy in front of the default gateway (client side)."""
    with FaultProxy("127.0.0.1", gateway.port) as proxy:
        yield proxy


def read_back(gateway: Gateway, bucket: str, key: str = KEY) -> bytes | None:
    try:
        body: bytes = gateway.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise
    return body


def assert_old_or_new(
    gateway: Gateway, bucket: str, old: bytes | None, new: bytes, key: str = KEY
) -> bytes | None:
    """The stored object is ``old`` (None: absent) or exactly ``new``; returns which."""
    time.sleep(0.3)  # let an aborted upload finish failing on the backend
    stored = read_back(gateway, bucket, key)
    assert stored in (old, new), (
        f"stored object is neither version: {None if stored is None else len(stored)} bytes"
    )
    return stored


def put_raw(url: str, data: bytes, pieces: int = 64 * 1024) -> RawResponse:
    return send(url, "PUT", sign("PUT", url, GATEWAY_USER, body=data), pieces_of(data, pieces))


def assert_s3_xml(response: RawResponse, code: str, status: int) -> None:
    assert response.status == status, response
    error = response.error()
    assert error["Code"] == code, response.body
    assert error["RequestId"], response.body


# --------------------------------------------------------------------------- client side


@SIZES
def test_client_disconnect_mid_put(
    backend: Backend, gateway: Gateway, bucket: str, client_proxy: FaultProxy, size: int
) -> None:
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    new = os.urandom(size)
    client_proxy.set_fault(Fault(Kind.DROP, Direction.UP, after_bytes=size // 2))
    with pytest.raises(CUT_ERRORS):
        put_raw(f"{client_proxy.url}/{bucket}/{KEY}", new)
    assert client_proxy.faults_injected == 1
    assert assert_old_or_new(gateway, bucket, old, new) == old
    assert gateway.alive()


@SIZES
def test_body_shorter_than_content_length(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    new = os.urandom(size)
    head = signed_put_head(f"{gateway.url}/{bucket}/{KEY}", new, size, GATEWAY_USER)
    received = exchange(gateway.port, head + new[: size // 2], half_close=True)
    assert not received.startswith(b"HTTP/1.1 200"), received[:200]
    assert assert_old_or_new(gateway, bucket, old, new) == old
    assert gateway.alive()


def test_body_longer_than_content_length(backend: Backend, gateway: Gateway, bucket: str) -> None:
    """mitmproxy reads exactly Content-Length bytes; the rest is the next request,
    which is not HTTP and is refused: the object is exactly the announced body.

    (A client that half-closes its side before the answer is treated as gone by
    mitmproxy: the upload is abandoned, see test_body_shorter_than_content_length.)"""
    new = os.urandom(5000)
    extra = b"\x00SURPLUS BYTES THAT ARE NOT A REQUEST\r\n\r\n"
    head = signed_put_head(f"{gateway.url}/{bucket}/{KEY}", new, len(new), GATEWAY_USER)
    received = exchange(gateway.port, head + new + extra, half_close=False, timeout=5)
    assert received.startswith(b"HTTP/1.1 200"), received[:300]
    second = received.split(b"HTTP/1.1 ")[2:]  # whatever answered the surplus
    assert all(not answer.startswith(b"2") for answer in second), received
    assert read_back(gateway, bucket) == new


def _chunked_put_without_final_chunk(
    gateway: Gateway, bucket: str, data: bytes
) -> tuple[str, dict[str, str], list[bytes]]:
    url = f"{gateway.url}/{bucket}/{KEY}"
    chunk = 64 * 1024
    lengths = [len(p) for p in pieces_of(data, chunk)]
    framing = sum(len(f"{n:x};chunk-signature=".encode()) + 64 + 4 for n in lengths)
    headers = sign(
        "PUT",
        url,
        GATEWAY_USER,
        payload_hash=STREAMING_SIGNED,
        headers=[
            ("Content-Encoding", "aws-chunked"),
            ("X-Amz-Decoded-Content-Length", str(len(data))),
            # Consistent with what is sent: the body is complete as HTTP, not as aws-chunked.
            ("Content-Length", str(len(data) + framing)),
        ],
    )
    chunks = signed_chunks(data, chunk, headers=headers, credentials=GATEWAY_USER)[:-1]
    assert sum(len(c) for c in chunks) == int(headers["Content-Length"])
    return url, headers, chunks


@SIZES
def test_aws_chunked_body_missing_final_chunk(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    new = os.urandom(size)
    url, headers, chunks = _chunked_put_without_final_chunk(gateway, bucket, new)
    # Found at the end of the body, so answered also when streamed.
    response = send(url, "PUT", headers, chunks)
    assert response.status == 400, response
    assert response.error()["Code"] in ("IncompleteBody", "InvalidRequest"), response.body
    assert assert_old_or_new(gateway, bucket, old, new) == old
    assert gateway.alive()


def test_gateway_killed_mid_put(
    backend: Backend, gateway: Gateway, gateway_factory: GatewayFactory, bucket: str
) -> None:
    """SIGKILL of the gateway while it streams an upload: the backend gets an
    incomplete request and keeps the previous version."""
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    doomed = gateway_factory(backend, fresh=True)
    new = os.urandom(LARGE)
    head = signed_put_head(f"{doomed.url}/{bucket}/{KEY}", new, len(new), GATEWAY_USER)
    with socket.create_connection(("127.0.0.1", doomed.port), timeout=30) as sock:
        sock.sendall(head + new[: LARGE // 2])
        time.sleep(0.3)  # the gateway has forwarded what it got
        doomed.process.process.kill()
        doomed.process.process.wait(10)
        with pytest.raises(OSError):
            for _ in range(64):  # the peer is gone: a write fails soon
                sock.sendall(new[LARGE // 2 : LARGE // 2 + 65536])
    doomed.stop()
    assert assert_old_or_new(gateway, bucket, old, new) == old


# --------------------------------------------------------------------------- backend side


@SIZES
def test_backend_reset_mid_put(faulty: Faulty, size: int) -> None:
    bucket = make_bucket(faulty.backend)
    gateway = faulty.gateway
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    new = os.urandom(size)
    faulty.proxy.set_fault(Fault(Kind.RESET, Direction.UP, after_bytes=size // 2))
    try:
        response = put_raw(f"{gateway.url}/{bucket}/{KEY}", new)
    except CUT_ERRORS:
        pass  # the client was still sending when the gateway closed the connection
    else:
        assert_s3_xml(response, "BadGateway", 502)
    assert faulty.proxy.faults_injected >= 1
    faulty.proxy.set_fault(PASS)
    assert assert_old_or_new(gateway, bucket, old, new) == old
    assert gateway.alive()


@SIZES
def test_backend_reset_mid_get_cuts_the_transfer(faulty: Faulty, size: int) -> None:
    bucket = make_bucket(faulty.backend)
    gateway = faulty.gateway
    data = os.urandom(size)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=data)
    faulty.proxy.set_fault(Fault(Kind.RESET, Direction.DOWN, after_bytes=size // 2))
    outcome = fetch(gateway, bucket, KEY)
    if outcome.status == 200:
        assert not outcome.complete, "a short body delivered as a complete 200"
        assert int(outcome.headers["content-length"]) == size
        assert len(outcome.body) < size
        assert data.startswith(outcome.body), "bytes that were never uploaded"
    else:  # cut before the gateway answered anything
        assert outcome.status == 502, outcome
        assert b"<Code>BadGateway</Code>" in outcome.body
    faulty.proxy.set_fault(PASS)
    assert read_back(gateway, bucket) == data


def test_slow_backend_delivers_exact_bytes(faulty: Faulty) -> None:
    bucket = make_bucket(faulty.backend)
    gateway = faulty.gateway
    faulty.proxy.set_fault(Fault(Kind.DELAY, delay=0.02))
    data = os.urandom(LARGE // 4)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=data)
    assert read_back(gateway, bucket) == data


def test_backend_slowdown_storm(faulty: Faulty) -> None:
    bucket = make_bucket(faulty.backend)
    gateway = faulty.gateway
    old = os.urandom(1000)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=old)
    faulty.proxy.set_fault(Fault(Kind.SLOWDOWN, count=3))
    new = os.urandom(SMALL)
    url = f"{gateway.url}/{bucket}/{KEY}"
    answers = [
        put_raw(url, new),
        send(url, "GET", sign("GET", url, GATEWAY_USER)),
        put_raw(url, new),
    ]
    for response in answers:
        assert_s3_xml(response, "SlowDown", 503)
        assert response.headers.get("x-s3gw-request-id")
    assert faulty.proxy.slowdowns_sent == 3
    assert read_back(gateway, bucket) == old  # the storm is over
    assert put_raw(url, new).status == 200
    assert read_back(gateway, bucket) == new


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_backend_down_gives_s3_error(
    backend: Backend, gateway_factory: GatewayFactory, method: str
) -> None:
    gateway = gateway_factory(backend, {"backend": {"url": f"http://127.0.0.1:{DOWN_PORT}"}})
    url = f"{gateway.url}/bucket/{KEY}"
    body = b"data" if method == "PUT" else b""
    response = send(url, method, sign(method, url, GATEWAY_USER, body=body), body)
    assert response.status == 502, response
    assert response.headers["x-amz-request-id"]
    if method == "HEAD":
        assert response.headers["x-amz-error-code"] == "BadGateway"
        assert response.body == b""
    else:
        assert_s3_xml(response, "BadGateway", 502)
        assert response.error()["RequestId"] == response.headers["x-amz-request-id"]
        assert b"127.0.0.1" not in response.body  # no internal addresses
    assert gateway.alive()


def test_backend_resets_on_connect_gives_s3_error(faulty: Faulty) -> None:
    faulty.proxy.set_fault(Fault(Kind.RESET, Direction.DOWN, after_bytes=0))
    url = f"{faulty.gateway.url}/bucket/{KEY}"
    response = send(url, "GET", sign("GET", url, GATEWAY_USER))
    assert_s3_xml(response, "BadGateway", 502)


# Nothing listens here for the whole session (taken once; the test needs a refused port).
DOWN_PORT = free_port()

"""Backend timeouts and retries (docs/adr/0008-retries-and-timeouts.md).

A fault proxy (``tests/faultproxy.py``) between gateway and backend stalls,
slows down or throttles the backend. Proxied requests get S3's
``ServiceUnavailable`` when the backend misses a deadline before anything
reached the client, and a cut transfer after; they are never retried by the
gateway, and a backend's 503 reaches the client with its ``Retry-After``. The
gateway's own side requests are retried a bounded number of times. One
backend (moto) is enough: this is about the gateway, not S3 semantics.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from addons.migrate import verify_bucket
from addons.settings import load_settings
from tests.faultproxy import PASS, SLOWDOWN_RETRY_AFTER, Direction, Fault, FaultProxy, Kind
from tests.harness import (
    GATEWAY_USER,
    Backend,
    Gateway,
    GatewayFactory,
    deep_merge,
    default_gateway_config,
    make_bucket,
)
from tests.rawclient import connect, pieces_of, send, sign
from tests.test_faults import CUT_ERRORS, assert_s3_xml, read_back
from tests.test_gateway_tamper import fetch

TIMEOUT = 1.0  # backend.read_timeout and connect_timeout of the gateways here (seconds)
SLACK = 4.0  # for a loaded 2-core machine
KEY = "obj"
SETTINGS = {"read_timeout": TIMEOUT, "connect_timeout": TIMEOUT, "retries": 2}


@pytest.fixture(scope="module")
def proxy(moto_backend: Backend) -> Iterator[FaultProxy]:
    parts = urlsplit(moto_backend.endpoint_url)
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as proxy:
        yield proxy


@pytest.fixture
def faulty(
    moto_backend: Backend, gateway_factory: GatewayFactory, proxy: FaultProxy
) -> Iterator[Gateway]:
    """A gateway with short deadlines whose backend connections pass through ``proxy``."""
    proxy.set_fault(PASS)
    yield gateway_factory(moto_backend, {"backend": {"url": proxy.url, **SETTINGS}})
    proxy.set_fault(PASS)


def _object(gateway: Gateway, size: int) -> tuple[str, bytes]:
    bucket = make_bucket(gateway.backend)
    data = os.urandom(size)
    gateway.client().put_object(Bucket=bucket, Key=KEY, Body=data)
    return bucket, data


def _healthy(gateway: Gateway, proxy: FaultProxy, bucket: str, data: bytes) -> None:
    proxy.set_fault(PASS)
    assert gateway.alive()
    assert read_back(gateway, bucket) == data


# --------------------------------------------------------------------------- read deadline


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_backend_that_never_answers_gives_service_unavailable(
    faulty: Gateway, proxy: FaultProxy, method: str
) -> None:
    bucket, data = _object(faulty, 1000)
    stalls = proxy.stalls
    proxy.set_fault(Fault(Kind.STALL, Direction.DOWN, after_bytes=0))
    url = f"{faulty.url}/{bucket}/{KEY}"
    body = os.urandom(5000) if method == "PUT" else b""
    started = time.monotonic()
    response = send(url, method, sign(method, url, GATEWAY_USER, body=body), body)
    elapsed = time.monotonic() - started
    assert_s3_xml(response, "ServiceUnavailable", 503)
    assert response.error()["RequestId"] == response.headers["x-amz-request-id"]
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK
    assert proxy.stalls - stalls == 1
    proxy.set_fault(PASS)
    assert faulty.alive()
    # As with S3 itself, a PUT whose answer timed out may or may not have been stored.
    assert read_back(faulty, bucket) in ((data, body) if method == "PUT" else (data,))


def test_backend_stalling_mid_body_cuts_the_transfer(faulty: Gateway, proxy: FaultProxy) -> None:
    size = 2 * 1024 * 1024
    bucket, data = _object(faulty, size)
    proxy.set_fault(Fault(Kind.STALL, Direction.DOWN, after_bytes=300_000))
    started = time.monotonic()
    outcome = fetch(faulty, bucket, KEY)
    elapsed = time.monotonic() - started
    assert outcome.status == 200
    assert not outcome.complete, "a stalled transfer delivered as a complete 200"
    assert int(outcome.headers["content-length"]) == size
    assert 0 < len(outcome.body) < size and data.startswith(outcome.body)
    assert elapsed < TIMEOUT + SLACK
    _healthy(faulty, proxy, bucket, data)


def test_backend_stalling_mid_buffered_body_gives_service_unavailable(
    faulty: Gateway, proxy: FaultProxy
) -> None:
    """Listing pages are read whole before the client gets anything: an S3 error is
    still possible when the backend stops in the middle of one."""
    bucket = make_bucket(faulty.backend)
    direct = faulty.backend.client()
    for index in range(30):
        direct.put_object(Bucket=bucket, Key=f"key-{index:04d}-{'x' * 100}", Body=b"")
    url = f"{faulty.backend.endpoint_url}/{bucket}?list-type=2"
    page = send(url, "GET", sign("GET", url, GATEWAY_USER))
    head = 20 + sum(len(name) + len(value) + 4 for name, value in page.headers.items())
    assert len(page.body) > 5000
    proxy.set_fault(Fault(Kind.STALL, Direction.DOWN, after_bytes=head + len(page.body) // 2))
    target = f"{faulty.url}/{bucket}?list-type=2"
    started = time.monotonic()
    response = send(target, "GET", sign("GET", target, GATEWAY_USER))
    assert_s3_xml(response, "ServiceUnavailable", 503)
    assert time.monotonic() - started < TIMEOUT + SLACK
    proxy.set_fault(PASS)
    assert faulty.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 30


def test_backend_not_taking_an_upload_gives_an_answer(faulty: Gateway, proxy: FaultProxy) -> None:
    """A backend that stops reading a streamed upload: the client is answered (or cut)
    after the deadline instead of waiting for mitmproxy's idle timeout."""
    bucket, data = _object(faulty, 1000)
    proxy.set_fault(Fault(Kind.STALL, Direction.UP, after_bytes=100_000))
    new = os.urandom(16 * 1024 * 1024)  # more than the socket buffers on the way hold
    url = f"{faulty.url}/{bucket}/{KEY}"
    started = time.monotonic()
    try:
        response = send(url, "PUT", sign("PUT", url, GATEWAY_USER, body=new), pieces_of(new, 65536))
    except CUT_ERRORS:
        pass  # closed while the client was still sending
    else:
        assert_s3_xml(response, "ServiceUnavailable", 503)
    assert time.monotonic() - started < TIMEOUT + SLACK
    _healthy(faulty, proxy, bucket, data)


def test_slow_but_progressing_backend_is_not_cut(faulty: Gateway, proxy: FaultProxy) -> None:
    """Every piece comes well within the deadline; the whole takes several times it."""
    bucket, data = _object(faulty, 100_000)
    proxy.set_fault(Fault(Kind.DELAY, delay=TIMEOUT * 0.3))
    started = time.monotonic()
    outcome = fetch(faulty, bucket, KEY)
    assert outcome.complete and outcome.body == data
    assert time.monotonic() - started > TIMEOUT * 1.5


def test_slow_client_is_not_cut(faulty: Gateway, proxy: FaultProxy) -> None:
    """A client that stops reading holds the backend up: that is not the backend's stall."""
    size = 24 * 1024 * 1024  # more than the socket buffers on both sides hold
    bucket, data = _object(faulty, size)
    url = f"{faulty.url}/{bucket}/{KEY}"
    connection = connect(url)
    try:
        connection.putrequest("GET", f"/{bucket}/{KEY}", skip_host=True, skip_accept_encoding=True)
        for name, value in sign("GET", url, GATEWAY_USER).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        time.sleep(TIMEOUT * 2.5)  # the gateway's buffers fill; it stops reading the backend
        assert response.read() == data
    finally:
        connection.close()


# --------------------------------------------------------------------------- connect deadline


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, connects hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            yield port


def test_backend_that_does_not_accept_gives_service_unavailable(
    moto_backend: Backend, gateway_factory: GatewayFactory, unaccepting_port: int
) -> None:
    url = f"http://127.0.0.1:{unaccepting_port}"
    gateway = gateway_factory(moto_backend, {"backend": {"url": url, **SETTINGS}}, fresh=True)
    try:
        target = f"{gateway.url}/bucket/{KEY}"
        started = time.monotonic()
        response = send(target, "GET", sign("GET", target, GATEWAY_USER))
        assert_s3_xml(response, "ServiceUnavailable", 503)
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert gateway.alive()
    finally:
        gateway.stop()


# --------------------------------------------------------------------------- retries


def test_proxied_slowdown_is_not_retried_and_keeps_retry_after(
    faulty: Gateway, proxy: FaultProxy
) -> None:
    bucket, data = _object(faulty, 1000)
    before = proxy.slowdowns_sent
    proxy.set_fault(Fault(Kind.SLOWDOWN, count=5, method="GET"))
    url = f"{faulty.url}/{bucket}/{KEY}"
    response = send(url, "GET", sign("GET", url, GATEWAY_USER))
    assert_s3_xml(response, "SlowDown", 503)
    assert response.headers["retry-after"] == str(SLOWDOWN_RETRY_AFTER)
    assert proxy.slowdowns_sent - before == 1  # the client's SDK retries, not the gateway
    _healthy(faulty, proxy, bucket, data)


def test_side_request_is_retried(faulty: Gateway, proxy: FaultProxy) -> None:
    """A suffix range needs a HEAD first; its first two attempts get 503 SlowDown."""
    bucket, data = _object(faulty, 10_000)
    before = proxy.slowdowns_sent
    proxy.set_fault(Fault(Kind.SLOWDOWN, count=2, method="HEAD"))
    answer = faulty.client().get_object(Bucket=bucket, Key=KEY, Range="bytes=-100")
    assert answer["Body"].read() == data[-100:]
    assert proxy.slowdowns_sent - before == 2


def test_side_request_gives_up_after_bounded_attempts(faulty: Gateway, proxy: FaultProxy) -> None:
    bucket, data = _object(faulty, 10_000)
    before = proxy.slowdowns_sent
    proxy.set_fault(Fault(Kind.SLOWDOWN, count=100, method="HEAD"))
    url = f"{faulty.url}/{bucket}/{KEY}"
    started = time.monotonic()
    response = send(url, "GET", sign("GET", url, GATEWAY_USER, headers=[("Range", "bytes=-100")]))
    assert_s3_xml(response, "SlowDown", 503)
    assert proxy.slowdowns_sent - before == 3  # one attempt and backend.retries (2) more
    assert time.monotonic() - started < 0.1 + 0.2 + SLACK  # two short backoffs
    _healthy(faulty, proxy, bucket, data)


def test_maintenance_commands_retry(
    moto_backend: Backend, faulty: Gateway, proxy: FaultProxy, tmp_path: Path
) -> None:
    """``verify`` (as every maintenance command) goes through botocore's standard retries."""
    bucket, _ = _object(faulty, 10_000)
    config = tmp_path / "gateway.yaml"
    overrides = {"backend": {"url": proxy.url, **SETTINGS}}
    config.write_text(yaml.safe_dump(deep_merge(default_gateway_config(moto_backend), overrides)))
    before = proxy.slowdowns_sent
    proxy.set_fault(Fault(Kind.SLOWDOWN, count=1, method="GET"))  # the listing's first attempt
    lines: list[str] = []
    report = verify_bucket(load_settings(str(config)), bucket, report=lines.append)
    assert (report.ok, report.failed) == (1, 0), lines
    assert proxy.slowdowns_sent - before == 1

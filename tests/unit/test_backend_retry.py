"""Retries of the gateway's own backend requests (addons/backend.py).

The schedule is checked as numbers; the retry loop against a real local HTTP
server that fails a given number of times, answers late, or not at all.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from addons.backend import RETRY_BASE, RETRY_CAP, backoff_delay, get, head_object
from addons.s3.errors import BAD_GATEWAY, S3Error
from addons.settings import Backend


def test_backoff_is_exponential_and_capped() -> None:
    ceilings = [backoff_delay(attempt, uniform=lambda: 1.0) for attempt in range(8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert ceilings[0] == RETRY_BASE and max(ceilings) == RETRY_CAP
    assert backoff_delay(10_000, uniform=lambda: 1.0) == RETRY_CAP  # no overflow


def test_backoff_has_full_jitter() -> None:
    """Uniform over [0, ceiling): anything from no pause to the whole ceiling."""
    assert backoff_delay(3, uniform=lambda: 0.0) == 0.0
    samples = [backoff_delay(3) for _ in range(2000)]
    assert all(0.0 <= delay < 0.8 for delay in samples)
    assert min(samples) < 0.05 and max(samples) > 0.75
    assert len(set(samples)) > 1900  # not a handful of fixed steps


@dataclass
class Script:
    """What the test server does with each request, in order; then it answers 200."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0  # before each answer
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[Script, Backend]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bytes) -> None:
            script.seen.append(self.command)
            time.sleep(script.delay)
            status = script.statuses.pop(0) if script.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(b"")

        def do_GET(self) -> None:
            self._answer(b"0123456789")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    backend = _backend(f"http://127.0.0.1:{httpd.server_address[1]}")
    yield script, backend
    httpd.shutdown()
    httpd.server_close()


def _backend(
    url: str, *, connect_timeout: float = 1.0, read_timeout: float = 1.0, retries: int = 2
) -> Backend:
    return Backend(
        url,
        "us-east-1",
        "AKIDTEST",
        "secret",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries=retries,
    )


def test_transient_failures_are_retried(server: tuple[Script, Backend]) -> None:
    script, backend = server
    script.statuses = [503, 500]
    status, _, body = asyncio.run(get(backend, "/b/k", max_body=100))
    assert (status, body) == (200, b"0123456789")
    assert script.seen == ["GET"] * 3


def test_client_errors_are_not_retried(server: tuple[Script, Backend]) -> None:
    script, backend = server
    script.statuses = [404]
    status, _ = asyncio.run(head_object(backend, "/b/k"))
    assert status == 404 and script.seen == ["HEAD"]


def test_attempts_are_bounded(server: tuple[Script, Backend]) -> None:
    script, backend = server
    script.statuses = [503] * 10
    started = time.monotonic()
    with pytest.raises(S3Error) as raised:
        asyncio.run(head_object(backend, "/b/k"))
    assert raised.value.code == "SlowDown" and raised.value.status == 503
    assert script.seen == ["HEAD"] * 3  # the first attempt and backend.retries (2) more
    assert time.monotonic() - started < 0.1 + 0.2 + 0.5  # two backoffs at most, and slack


def test_a_backend_that_does_not_answer_times_out(server: tuple[Script, Backend]) -> None:
    script, backend = server
    script.delay = 0.5
    backend = _backend(backend.url, read_timeout=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(S3Error) as raised:
        asyncio.run(head_object(backend, "/b/k"))
    assert raised.value.code == "ServiceUnavailable"
    assert len(script.seen) == 2
    assert time.monotonic() - started < 2 * 0.2 + 0.1 + 0.5


def test_a_backend_that_does_not_accept_times_out() -> None:
    """A listener whose accept queue is full: the kernel drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            backend = _backend(f"http://127.0.0.1:{port}", connect_timeout=0.2, retries=1)
            started = time.monotonic()
            with pytest.raises(S3Error) as raised:
                asyncio.run(head_object(backend, "/b/k"))
    assert raised.value.code == "ServiceUnavailable"
    assert time.monotonic() - started < 2 * 0.2 + 0.1 + 0.5


def test_a_refused_connection_is_bad_gateway() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        backend = _backend(f"http://127.0.0.1:{port}", retries=1)
        with pytest.raises(S3Error) as raised:
            asyncio.run(head_object(backend, "/b/k"))
    assert raised.value.code == BAD_GATEWAY

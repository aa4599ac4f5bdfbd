"""Side requests the gateway itself sends to the backend (signed, off the event loop).

Each attempt has ``backend.connect_timeout`` to connect and ``backend.read_timeout``
for every read (idle, not total). These requests are HEAD and GET without a
body, so they are safe to repeat: connection errors, timeouts and 500, 502,
503 and 504 answers are retried ``backend.retries`` times with capped
exponential backoff and full jitter (docs/adr/0008-retries-and-timeouts.md).
When the attempts are used up the caller gets the S3 error a client's SDK
retries on its own (``SlowDown``, ``ServiceUnavailable``, ``BadGateway``...).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from http.client import HTTPConnection, HTTPException, HTTPSConnection

from mitmproxy import http

from addons.bodycrypto import headers_window
from addons.resign import sign_for_backend
from addons.s3.errors import BAD_GATEWAY, S3Error
from addons.s3.sigv4 import EMPTY_SHA256
from addons.settings import Backend

log = logging.getLogger("s3gw")

RETRY_BASE = 0.1  # seconds: the first backoff is at most this long
RETRY_CAP = 2.0  # seconds: no backoff is longer (a client is waiting)
# Answers worth another attempt: the backend's transient failures and throttling.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Only these are repeated: idempotent, and sent without a body.
RETRY_METHODS = frozenset({"GET", "HEAD"})
# What a client gets once the attempts are used up, by the backend's last status.
_STATUS_ERRORS = {500: "InternalError", 502: BAD_GATEWAY, 503: "SlowDown", 504: BAD_GATEWAY}
# A side read found another version of the object than the answer it completes.
OBJECT_CHANGED = "The object changed while it was being read."


def backoff_delay(
    attempt: int,
    *,
    base: float = RETRY_BASE,
    cap: float = RETRY_CAP,
    uniform: Callable[[], float] = random.random,
) -> float:
    """Pause before retry ``attempt`` (0 for the first retry): "full jitter", uniform in
    ``[0, min(cap, base * 2**attempt))``, so that many gateways retrying at once spread out."""
    return uniform() * min(cap, base * (1 << min(attempt, 32)))


def ssl_context(backend: Backend) -> ssl.SSLContext:
    """Verifies the backend like mitmproxy does: against ``backend.ca_bundle`` if set."""
    return ssl.create_default_context(cafile=backend.ca_bundle or None)


def _request_sync(
    backend: Backend, method: str, path: str, headers: Mapping[str, str], max_body: int
) -> tuple[int, http.Headers, bytes]:
    request = http.Request.make(method, f"{backend.url}{path}")
    request.headers.update(headers)
    sign_for_backend(request, backend, EMPTY_SHA256)
    if backend.scheme == "https":
        conn: HTTPConnection = HTTPSConnection(
            backend.host,
            backend.port,
            timeout=backend.connect_timeout,
            context=ssl_context(backend),
        )
    else:
        conn = HTTPConnection(backend.host, backend.port, timeout=backend.connect_timeout)
    try:
        conn.connect()
        # From here on the timeout bounds each read: a slow answer that keeps coming is fine.
        assert conn.sock is not None
        conn.sock.settimeout(backend.read_timeout)
        conn.request(method, request.path, headers=dict(request.headers))
        response = conn.getresponse()
        # Read at most max_body bytes: the connection is closed anyway.
        body = response.read(max_body) if max_body else response.read(0)
        headers_ = http.Headers([(k.encode(), v.encode()) for k, v in response.getheaders()])
        return response.status, headers_, body
    finally:
        conn.close()


async def _request(
    backend: Backend, method: str, path: str, headers: Mapping[str, str], max_body: int
) -> tuple[int, http.Headers, bytes]:
    """One side request, retried as the module docstring says; raises S3Error when the
    backend stays unreachable or failing."""
    loop = asyncio.get_running_loop()
    attempts = 1 + (backend.retries if method in RETRY_METHODS else 0)
    for attempt in range(attempts):
        try:
            answer = await loop.run_in_executor(
                None, _request_sync, backend, method, path, headers, max_body
            )
        except ssl.SSLCertVerificationError as error:
            log.error("s3gw: backend %s %s: %s", method, path, error)
            raise S3Error(BAD_GATEWAY) from None  # another attempt would fail the same way
        except (OSError, HTTPException) as error:  # TimeoutError is an OSError
            timed_out = isinstance(error, TimeoutError)
            failure = S3Error("ServiceUnavailable" if timed_out else BAD_GATEWAY)
            why = "timed out" if timed_out else f"{type(error).__name__}: {error}"
        else:
            status = answer[0]
            if status not in RETRY_STATUSES:
                return answer
            failure = S3Error(_STATUS_ERRORS[status])
            why = f"status {status}"
        if attempt + 1 == attempts:
            log.warning(
                "s3gw: backend %s %s failed after %d attempts: %s", method, path, attempts, why
            )
            raise failure
        delay = backoff_delay(attempt)
        log.info("s3gw: backend %s %s: %s; retrying in %.2fs", method, path, why, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


async def head_object(backend: Backend, path: str) -> tuple[int, http.Headers]:
    """HEAD ``path`` (``/bucket/key[?versionId=..]``) on the backend."""
    status, headers, _ = await _request(backend, "HEAD", path, {}, 0)
    return status, headers


async def get(
    backend: Backend, path: str, headers: Mapping[str, str] | None = None, *, max_body: int
) -> tuple[int, http.Headers, bytes]:
    """GET ``path`` (with its query) on the backend; the body is cut at ``max_body`` bytes."""
    return await _request(backend, "GET", path, dict(headers or {}), max_body)


async def get_stored_range(
    backend: Backend, path: str, first: int, last: int, etag: str | None
) -> tuple[http.Headers, bytes]:
    """Bytes ``first..last`` of the stored object at ``path``, of the version whose
    ETag is ``etag``: a side read that completes another answer. Returns the
    answer's headers and body; the body ends early where the object does."""
    headers = {"range": f"bytes={first}-{last}"}
    if etag:
        headers["if-match"] = etag
    status, answer_headers, body = await get(backend, path, headers, max_body=last - first + 1)
    if status == 412:
        raise S3Error("InternalError", OBJECT_CHANGED)
    window = headers_window(answer_headers)
    if status not in (200, 206) or window is None or window.first != first:
        log.error("s3gw: reading bytes %d-%d of %s: status %d", first, last, path, status)
        raise S3Error(BAD_GATEWAY)
    return answer_headers, body

"""Side requests the gateway itself sends to the backend (signed, off the event loop)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from http.client import HTTPConnection, HTTPSConnection

from mitmproxy import http

from addons.resign import sign_for_backend
from addons.s3.sigv4 import EMPTY_SHA256
from addons.settings import Backend

TIMEOUT = 30.0


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
            backend.host, backend.port, timeout=TIMEOUT, context=ssl_context(backend)
        )
    else:
        conn = HTTPConnection(backend.host, backend.port, timeout=TIMEOUT)
    try:
        conn.request(method, request.path, headers=dict(request.headers))
        response = conn.getresponse()
        # Read at most max_body bytes: the connection is closed anyway.
        body = response.read(max_body) if max_body else response.read(0)
        headers_ = http.Headers([(k.encode(), v.encode()) for k, v in response.getheaders()])
        return response.status, headers_, body
    finally:
        conn.close()


async def head_object(backend: Backend, path: str) -> tuple[int, http.Headers]:
    """HEAD ``path`` (``/bucket/key[?versionId=..]``) on the backend."""
    status, headers, _ = await asyncio.get_running_loop().run_in_executor(
        None, _request_sync, backend, "HEAD", path, {}, 0
    )
    return status, headers


async def get(
    backend: Backend, path: str, headers: Mapping[str, str] | None = None, *, max_body: int
) -> tuple[int, http.Headers, bytes]:
    """GET ``path`` (with its query) on the backend; the body is cut at ``max_body`` bytes."""
    return await asyncio.get_running_loop().run_in_executor(
        None, _request_sync, backend, "GET", path, dict(headers or {}), max_body
    )

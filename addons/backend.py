"""Side requests the gateway itself sends to the backend (signed, off the event loop)."""

from __future__ import annotations

import asyncio
import ssl
from http.client import HTTPConnection, HTTPSConnection

from mitmproxy import http

from addons.resign import sign_for_backend
from addons.s3.sigv4 import EMPTY_SHA256
from addons.settings import Backend

TIMEOUT = 30.0


def _head_sync(backend: Backend, path: str) -> tuple[int, http.Headers]:
    request = http.Request.make("HEAD", f"{backend.url}{path}")
    sign_for_backend(request, backend, EMPTY_SHA256)
    if backend.scheme == "https":
        conn: HTTPConnection = HTTPSConnection(
            backend.host, backend.port, timeout=TIMEOUT, context=ssl.create_default_context()
        )
    else:
        conn = HTTPConnection(backend.host, backend.port, timeout=TIMEOUT)
    try:
        conn.request("HEAD", request.path, headers=dict(request.headers))
        response = conn.getresponse()
        response.read()
        headers = http.Headers([(k.encode(), v.encode()) for k, v in response.getheaders()])
        return response.status, headers
    finally:
        conn.close()


async def head_object(backend: Backend, path: str) -> tuple[int, http.Headers]:
    """HEAD ``path`` (``/bucket/key[?versionId=..]``) on the backend."""
    return await asyncio.get_running_loop().run_in_executor(None, _head_sync, backend, path)

"""Answers ``/healthz`` and ``/readyz`` itself (unsigned requests only).

A signed request to ``/healthz`` is a ListObjects on a bucket of that name and
goes to S3 as usual.
"""

from __future__ import annotations

from mitmproxy import http

from addons.config import Config
from addons.route import passed_through

HEALTH_PATHS = ("/healthz", "/readyz")


def _is_unsigned(request: http.Request) -> bool:
    return "authorization" not in request.headers and "X-Amz-Signature" not in request.query


class Health:
    def __init__(self, config: Config) -> None:
        self._config = config

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if passed_through(flow):
            return
        request = flow.request
        path = request.path.split("?", 1)[0]
        if path not in HEALTH_PATHS or request.method not in ("GET", "HEAD"):
            return
        if not _is_unsigned(request):
            return
        ready = path == "/healthz" or self._config.ready
        status, body = (200, b"ok\n") if ready else (503, b"not ready\n")
        flow.response = http.Response.make(status, body, {"Content-Type": "text/plain"})

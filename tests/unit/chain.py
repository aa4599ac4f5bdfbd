"""The gateway's addon chain on synthetic flows, with an in-memory S3 backend.

``Chain.send`` walks a flow through the hooks in the order mitmproxy's HTTP
layer calls them (request headers, streamed or buffered body, response headers,
streamed or buffered body, response), so addons can be unit-tested together
without sockets: mitmproxy's addon test context provides ``ctx``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from addons.auth import ClientAuth
from addons.config import Config
from addons.context import RequestContext
from addons.objectcrypto import ObjectCrypto
from addons.resign import Resign

ACCESS_KEY = "GWTESTACCESSKEY00001"
SECRET_KEY = "gwTestSecret0001/aB3dE5gH7jK9mN1pQ3sT5vX"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue0123456789abcdefSECRET"
BACKEND_SECRET = "backendSecret0001/aB3dE5gH7jK9mN1pQ3sT5v"
HOST = "gateway.test:8080"
CHUNK = 1024  # small chunks: a few KiB give several


def settings_file(directory: Path, observability: Mapping[str, Any] | None = None) -> Path:
    settings: dict[str, Any] = {
        "backend": {
            "url": "http://127.0.0.1:9",
            "region": "us-east-1",
            "access_key_id": "BACKENDACCESSKEY0001",
            "secret_access_key": BACKEND_SECRET,
        },
        "credentials": [{"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}],
        "keyring": {
            "active": "k1",
            "keys": {"k1": {"base64": base64.b64encode(os.urandom(32)).decode()}},
        },
        "encryption": {"chunk_size": CHUNK},
    }
    if observability:
        settings["observability"] = dict(observability)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def signed(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    secret: str = SECRET_KEY,
    token: str | None = None,
) -> http.Request:
    """A request as an SDK would send it to the gateway, SigV4-signed now."""
    url = f"http://{HOST}{path}"
    aws = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    aws.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(ACCESS_KEY, secret, token), "s3", "us-east-1").add_auth(aws)
    return _request(method, url, body, aws.headers.items())


def presigned(method: str, path: str, *, token: str | None = None) -> http.Request:
    """A presigned-URL request (signature and credential in the query)."""
    url = f"http://{HOST}{path}"
    aws = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY, token), "s3", "us-east-1", 300).add_auth(
        aws
    )
    return _request(method, aws.url, b"", [])


def _request(method: str, url: str, body: bytes, headers: Any) -> http.Request:
    request = http.Request.make(method, url, body, [(b"Host", HOST.encode())])
    for name, value in headers:
        request.headers[name] = value.decode() if isinstance(value, bytes) else value
    if body:
        request.headers["content-length"] = str(len(body))
    request.timestamp_start = time.time()
    return request


@dataclass
class MemoryS3:
    """Just enough of S3 for PUT, GET (ranges) and HEAD of objects."""

    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    requests: list[http.Request] = field(default_factory=list)

    def __call__(self, request: http.Request) -> http.Response:
        self.requests.append(request)
        path = request.path.split("?", 1)[0]
        if request.method == "PUT":
            meta = {k: v for k, v in request.headers.items() if k.lower().startswith("x-amz-meta-")}
            self.objects[path] = (request.raw_content or b"", meta)
            return http.Response.make(200, b"", {"ETag": '"etag"'})
        stored = self.objects.get(path)
        if stored is None:
            body = b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>"
            return http.Response.make(404, b"" if request.method == "HEAD" else body)
        data, meta = stored
        headers = {**meta, "ETag": '"etag"', "Content-Type": "application/octet-stream"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        status, first, last = 200, 0, len(data) - 1
        if match:
            status, first = 206, int(match[1])
            last = min(int(match[2]), len(data) - 1) if match[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        body = data[first : last + 1]
        response = http.Response.make(status, b"" if request.method == "HEAD" else body, headers)
        response.headers["content-length"] = str(len(body))
        return response


Backend = Callable[[http.Request], http.Response]


class Chain:
    """Addons in gateway order, with their hooks run as mitmproxy would."""

    def __init__(self, context: taddons.context, addons: list[Any]) -> None:
        self.context = context
        self.addons = addons

    def hook(self, name: str, flow: http.HTTPFlow) -> None:
        for addon in self.addons:
            method = getattr(addon, name, None)
            if method is None:
                continue
            result = method(flow)
            if inspect.iscoroutine(result):
                asyncio.run(result)

    def send(
        self, request: http.Request, backend: Backend | None = None
    ) -> tuple[http.HTTPFlow, bytes]:
        """Run one exchange; returns the flow and the response body the client got."""
        flow = tflow.tflow(req=request)
        flow.request.timestamp_end = None
        self.hook("requestheaders", flow)
        if flow.response is None and callable(flow.request.stream):
            transform = flow.request.stream
            pieces = [*transform(request.raw_content or b""), *transform(b"")]
            flow.request.data.content = b"".join(pieces)  # what the backend receives
        flow.request.timestamp_end = time.time()
        self.hook("request", flow)
        if flow.response is not None:  # answered by an addon
            flow.response.timestamp_start = time.time()
            self.hook("responseheaders", flow)
            return self._finish_response(flow)
        if flow.error is not None or backend is None:
            flow.error = flow.error or tflow.terr("Connection refused")
            self.hook("error", flow)
            return flow, b""
        answer = backend(flow.request)
        answer.timestamp_start = time.time()
        flow.response = answer
        self.hook("responseheaders", flow)
        return self._finish_response(flow)

    def _finish_response(self, flow: http.HTTPFlow) -> tuple[http.HTTPFlow, bytes]:
        response = flow.response
        assert response is not None
        body = response.raw_content or b""
        if callable(response.stream):
            transform = response.stream
            body = b"".join([*transform(body), *transform(b"")])
        response.timestamp_end = time.time()
        state_aborted = bool(getattr(flow.metadata.get("s3gw"), "aborted", False))
        if state_aborted:
            flow.error = tflow.terr("Connection aborted")
            self.hook("error", flow)
        else:
            self.hook("response", flow)
        return flow, body


@contextmanager
def gateway_chain(
    directory: Path,
    observers: list[Any],
    *,
    observability: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Iterator[Chain]:
    """Config, RequestContext, ClientAuth, ObjectCrypto, Resign, then ``observers(config)``."""
    config = Config()
    core = [RequestContext(config), ClientAuth(config), ObjectCrypto(config), Resign(config)]
    built = [make(config) for make in observers]
    with taddons.context(Proxyserver(), config, *core, *built) as context:
        context.configure(config, gw_config=str(settings_file(directory, observability)))
        for addon in built:
            context.configure(addon, **(options or {}))
        yield Chain(context, [config, *core, *built])

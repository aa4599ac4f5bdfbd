"""Routes every authenticated request to the backend and signs it with the
backend's credentials (botocore's SigV4 signer).

Streamed bodies (object uploads) are signed in ``requestheaders`` with
``UNSIGNED-PAYLOAD``, since their headers leave before the body is read; small
buffered bodies are signed in ``request`` with their real SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import unquote

from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from addons.config import Config
from addons.failsafe import fail_closed
from addons.flowstate import active_state, respond_error
from addons.route import flow_backend
from addons.s3.errors import S3Error
from addons.settings import Backend

# Client authentication that must not reach the backend.
_CLIENT_AUTH_HEADERS = frozenset(
    {b"authorization", b"x-amz-date", b"x-amz-content-sha256", b"x-amz-security-token"}
)
_PRESIGN_PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)


class _PresetPayloadSigner(S3SigV4Auth):
    """S3 SigV4 with a payload hash we computed (or UNSIGNED-PAYLOAD)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["s3gw_payload_hash"])


def strip_presign_query(path: str) -> str:
    """Drop the client's presigned-URL parameters, keeping the rest byte for byte."""
    if "?" not in path:
        return path
    base, query = path.split("?", 1)
    kept = [p for p in query.split("&") if p and unquote(p.split("=", 1)[0]) not in _PRESIGN_PARAMS]
    return base + ("?" + "&".join(kept) if kept else "")


def sign_for_backend(request: http.Request, backend: Backend, payload_hash: str) -> None:
    """Replace the client's authentication by a backend signature, in place."""
    # On the raw header fields, in one pass each: lookups by name (and pop() of
    # absent names, which raises inside) were a third of the re-signing time.
    request.headers.fields = tuple(
        field for field in request.headers.fields if field[0].lower() not in _CLIENT_AUTH_HEADERS
    )
    request.path = strip_presign_query(request.path)
    if (request.scheme, request.host, request.port) != (backend.scheme, backend.host, backend.port):
        request.scheme = backend.scheme
        request.host = backend.host
        request.port = backend.port
    request.headers["host"] = backend.netloc
    amz: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers.fields:
        name = raw_name.decode("utf-8", "surrogateescape").lower()  # as mitmproxy's Headers
        if name.startswith("x-amz-") or name == "content-md5":
            amz.setdefault(name, []).append(raw_value.decode("utf-8", "surrogateescape"))
    signed = {"host": backend.netloc} | {name: ",".join(values) for name, values in amz.items()}
    aws_request = AWSRequest(
        method=request.method,
        url=f"{backend.scheme}://{backend.netloc}{request.path}",
        headers=signed,
    )
    aws_request.context["s3gw_payload_hash"] = payload_hash
    credentials = Credentials(backend.access_key_id, backend.secret_access_key)
    _PresetPayloadSigner(credentials, "s3", backend.region).add_auth(aws_request)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256"):
        request.headers[name.lower()] = aws_request.headers[name]


class Resign:
    def __init__(self, config: Config) -> None:
        self._config = config

    def load(self, loader: Loader) -> None:
        # mitmproxy runs the root logger at DEBUG, and botocore's signer logs each
        # canonical request and signature there: with mitmproxy's log handlers
        # that cost about 6% of a small request, for lines nobody should see.
        logging.getLogger("botocore").setLevel(logging.WARNING)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or not flow.request.stream:
            return
        self._sign(flow, UNSIGNED_PAYLOAD)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or flow.request.stream:
            return
        body = flow.request.raw_content or b""
        payload_hash = hashlib.sha256(body).hexdigest()
        self._sign(flow, payload_hash)

    def _sign(self, flow: http.HTTPFlow, payload_hash: str) -> None:
        state = active_state(flow)
        if state is not None and state.auth is None:
            # Never sign with the backend's key what no client key has authenticated.
            respond_error(flow, S3Error("AccessDenied"))
            return
        try:
            backend = flow_backend(flow, self._config.current())
        except S3Error as error:
            respond_error(flow, error)
            return
        sign_for_backend(flow.request, backend, payload_hash)

"""Per-flow gateway state and the helpers every addon uses to answer or abort a flow."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy import events

from addons.s3.errors import S3Error, error_xml
from addons.s3.ops import S3Operation
from addons.settings import BucketPolicy
from addons.transforms import ReplaceBodyTransform

_KEY = "s3gw"
log = logging.getLogger("s3gw")


@dataclass
class FlowState:
    request_id: str
    operation: S3Operation
    started: float = field(default_factory=time.monotonic)
    auth: Any = None  # addons.s3.sigv4.AuthContext once the client is authenticated
    # The bucket's policy, looked up once by RequestContext; read by the body addons.
    policy: BucketPolicy = BucketPolicy.ENCRYPT
    # Set by the addon that rewrote the body; read by the re-signer.
    streamed_request: bool = False
    error: S3Error | None = None
    aborted: bool = False
    encryption: str = ""  # "s3g1", "none" (legacy plaintext) or "" (no object body)
    range_request: Any = None  # crypto.RangeRequest of a ranged GetObject
    range_header: str = ""  # the client's Range header (the backend gets a covering one)
    upload: Any = None  # addons.transforms.UploadTransform of a small, buffered upload
    upload_error: S3Error | None = None
    multipart: Any = None  # addons.multipart.UploadRequest of a multipart upload request
    # For the observers (metrics, access log, tracing); docs/OBSERVABILITY.md.
    # The request as received: other addons rewrite path, Host and authentication.
    client_target: str = ""  # path and query
    client_headers: http.Headers | None = None
    request_length: int | None = None  # Content-Length as the client sent it
    backend_status: int | None = None  # the backend's status, before any translation
    crypto: CryptoStats | None = None  # set by the encrypting/decrypting addon, if it counts


@dataclass
class CryptoStats:
    """What encrypting or decrypting a flow's body did.

    The addon that runs the cipher may fill this in as it goes; where it does
    not, the observers derive the figures from the flow's sizes and timestamps
    (``addons.observe.crypto_stats``).
    """

    direction: str  # "encrypt" or "decrypt"
    plaintext_bytes: int = 0
    ciphertext_bytes: int = 0
    chunks: int = 0
    started: float | None = None  # time.time() when the first piece was transformed
    finished: float | None = None  # time.time() after the last piece
    error: str = ""  # why it failed (an S3 error code); "" if it did not


def new_request_id() -> str:
    return secrets.token_hex(8).upper()


def attach(flow: http.HTTPFlow, state: FlowState) -> None:
    flow.metadata[_KEY] = state


def state_of(flow: http.HTTPFlow) -> FlowState | None:
    state = flow.metadata.get(_KEY)
    return state if isinstance(state, FlowState) else None


def _error_answer(flow: http.HTTPFlow, error: S3Error) -> tuple[str, bytes]:
    """The request id and S3 XML error document answering ``flow`` with ``error``,
    which is recorded in the flow's state for the observers."""
    state = state_of(flow)
    request_id = state.request_id if state else new_request_id()
    resource = state.operation.resource if state else flow.request.path.split("?", 1)[0]
    if state is not None:
        state.error = error
    return request_id, error_xml(error, resource=resource, request_id=request_id)


def respond_error(flow: http.HTTPFlow, error: S3Error) -> None:
    """Answer the flow with S3's XML error document, without contacting the backend."""
    request_id, body = _error_answer(flow, error)
    if flow.request.method == "HEAD":
        body = b""
    headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
    flow.response = http.Response.make(error.status, body, headers)
    if flow.request.method == "HEAD":
        # HEAD answers carry no body but S3 still reports the error code.
        flow.response.headers["x-amz-error-code"] = error.code


# Above this, a refused upload's connection is closed instead of answered:
# mitmproxy would read and buffer the whole body before it can send an answer.
MAX_BUFFERED_REFUSAL = 8 * 1024 * 1024


def refuse(flow: http.HTTPFlow, error: S3Error) -> None:
    """Answer with an S3 error, or close the connection if the body is too large to read."""
    state = state_of(flow)
    if state is not None:
        state.error = error
    log.info(
        "s3gw: %s %s refused: %s %s",
        flow.request.method,
        flow.request.path.split("?", 1)[0],
        error.code,
        error.message,
    )
    length = flow.request.headers.get("content-length", "0")
    if flow.request.method in ("PUT", "POST") and (
        not length.isdigit() or int(length) > MAX_BUFFERED_REFUSAL
    ):
        log.warning("s3gw: refusing a large upload by closing the connection: %s", error.code)
        # flow.kill() would leave a client that is still sending hanging.
        abort_connections(flow)
        return
    respond_error(flow, error)


def active_state(flow: http.HTTPFlow) -> FlowState | None:
    """The gateway state of a flow still to be handled (not answered, refused or killed)."""
    state = state_of(flow)
    if state is None or state.error is not None or flow.response is not None:
        return None
    if flow.error is not None or not flow.live:
        return None
    return state


def error_body_response(flow: http.HTTPFlow, error: S3Error) -> bytes:
    """Turn an already received backend response into an S3 error; returns the new body."""
    assert flow.response is not None
    request_id, body = _error_answer(flow, error)
    response = flow.response
    response.status_code = error.status
    response.reason = ""
    keep = {"date", "server", "connection", "x-s3gw-request-id"}
    for name in list(response.headers.keys()):
        if name.lower() not in keep:
            del response.headers[name]
    response.headers["content-type"] = "application/xml"
    response.headers["x-amz-request-id"] = request_id
    if flow.request.method == "HEAD":
        response.headers["x-amz-error-code"] = error.code
        body = b""
    response.headers["content-length"] = str(len(body))
    return body


def buffer_answer_up_to(flow: http.HTTPFlow, max_bytes: int, error: S3Error) -> bool:
    """Have mitmproxy read the backend's answer whole, for a ``response`` hook that
    rewrites it, even where ``stream_large_bodies`` would stream it. An answer
    whose ``Content-Length`` exceeds ``max_bytes`` is not read: its body is
    replaced by ``error``'s document, and False returned."""
    response = flow.response
    assert response is not None
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        response.stream = ReplaceBodyTransform(error_body_response(flow, error))
        return False
    response.stream = False
    return True


def answer_instead_of_backend(flow: http.HTTPFlow, error: S3Error) -> None:
    """Answer a flow whose request is streaming to the backend with an S3 error.

    The gateway holds the request's last piece back, so the backend is still
    waiting for it. The error is fed to mitmproxy as the backend's answer, with
    ``Connection: close``: it reaches the client the way any answer does (also
    through TLS, and past the response hooks), and the backend connection is
    closed before the backend has the whole body, so it stores nothing.

    Only for a backend connection without TLS: mitmproxy would take the answer
    for TLS records from the backend (the caller checks ``server_conn.tls``).
    """
    request_id, body = _error_answer(flow, error)
    answer = http.Response.make(
        error.status,
        body,
        {"Content-Type": "application/xml", "x-amz-request-id": request_id, "Connection": "close"},
    )
    handler = _connection_handler(flow)
    if handler is None:
        abort_connections(flow)
        return
    event = events.DataReceived(flow.server_conn, assemble_response(answer))

    def feed() -> None:
        # Not from inside the transform that found the error: mitmproxy's layers
        # are in the middle of handling an event then.
        if flow.response is not None or flow.error is not None:
            abort_connections(flow)  # the backend answered or failed meanwhile
            return
        fed = handler.server_event(event)
        if asyncio.iscoroutine(fed):  # mitmproxy 12; 11's is a plain method
            task = asyncio.get_running_loop().create_task(fed)
            _feeding.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(_feeding.discard)

    asyncio.get_running_loop().call_soon(feed)


_feeding: set[asyncio.Task[None]] = set()


def _connection_handler(flow: http.HTTPFlow) -> Any:
    try:
        return ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
    except AttributeError:
        return None


def abort_connections(flow: http.HTTPFlow, *, client: bool = True) -> None:
    """Close client and server connections of a flow whose body is already streaming.

    Raising from a stream transform would hang the client; closing both
    transports gives it a clean truncation error and leaves the backend with an
    incomplete request it never commits. With ``client=False`` only the backend
    connection is closed, and mitmproxy reports the flow's error to the client.
    """
    state = state_of(flow)
    if state is not None and client:
        state.aborted = True
    handler = _connection_handler(flow)
    if handler is None:
        return
    for conn in (handler.client, flow.server_conn) if client else (flow.server_conn,):
        io = handler.transports.get(conn)
        if io is not None and io.writer is not None:
            io.writer.transport.abort()

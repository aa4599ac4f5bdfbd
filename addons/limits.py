"""Limits on hostile or excessive input, per-key rate limiting, and S3-style
answers when the backend cannot be reached.

Placed right after RequestContext, so every check runs before the client's
signature is verified by ClientAuth and before anything is forwarded:

- request smuggling shapes are refused by mitmproxy's HTTP/1 parser before
  any addon runs: duplicate or malformed ``Content-Length`` (its 400 page),
  ``Content-Length`` together with ``Transfer-Encoding`` (answered here as
  S3's ``InvalidRequest``, see ``error``). ``Transfer-Encoding: chunked``
  alone is unambiguous and allowed (SDKs send aws-chunked uploads that way);
- header sections above 8 KiB (S3's limit, request line included) or with
  more than 128 fields are refused with ``RequestHeaderSectionTooLarge``;
- object keys longer than 1024 bytes of UTF-8 are refused with
  ``KeyTooLongError``, as S3 does;
- user metadata (``x-amz-meta-*`` names and values) above S3's 2 KiB is
  refused with ``MetadataTooLarge``;
- DeleteObjects bodies with more than 1000 keys are refused with
  ``MalformedXML``, and larger XML bodies than S3 accepts are refused;
- per access key token buckets (``gw_rate_limit`` requests per second,
  ``gw_rate_burst``; off by default) answer ``SlowDown``. Only requests whose
  signature verifies are counted, so nobody can use up another client's
  tokens by sending requests in its name;
- a backend that cannot be reached, or that drops the connection before it
  answers (or before a buffered answer is complete), gets the client S3's
  XML error document (``BadGateway``, 502) with the request id instead of
  mitmproxy's HTML error page. A streamed response gets nothing added: its
  headers may be out, so the client's connection is cut and it sees a body
  shorter than the announced ``Content-Length``. A backend that misses a
  deadline of ``addons/deadlines.py`` gets ``ServiceUnavailable`` (503) instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from xml.etree import ElementTree

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedElementTree
from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import ConnectionState
from mitmproxy.exceptions import OptionsError
from mitmproxy.net.http.http1 import assemble_response

from addons.auth import verify_request
from addons.config import Config
from addons.deadlines import deadline_expired
from addons.failsafe import fail_closed
from addons.flowstate import active_state, refuse, respond_error, state_of
from addons.s3.errors import BAD_GATEWAY, S3Error, error_xml

log = logging.getLogger("s3gw")

# S3 limits a request's header section to 8 KiB; the request line is counted
# here too (long presigned URLs stay well below).
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADER_COUNT = 128
MAX_KEY_BYTES = 1024  # S3's limit on the UTF-8 length of an object key
MAX_USER_METADATA_BYTES = 2048  # S3: names and values of x-amz-meta-* headers
MAX_DELETE_KEYS = 1000  # S3's limit per DeleteObjects request
# DeleteObjects with 1000 maximal keys is about 1.1 MiB of XML; S3 refuses more.
MAX_XML_BODY = 2 * 1024 * 1024
_META_PREFIX = "x-amz-meta-"
_ADMITTED = "s3gw.limits.admitted"  # flow.metadata: the request passed these checks
# In mitmproxy's refusal of a request with both Content-Length and Transfer-Encoding.
_SMUGGLING = "request smuggling"


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateLimiter:
    """One token bucket per access key id (thread-safe; buckets are tiny)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, access_key_id: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(access_key_id)
            if bucket is None:
                bucket = self._buckets[access_key_id] = TokenBucket(self.rate, self.burst)
            return bucket.take()


def user_metadata_bytes(headers: http.Headers) -> int:
    """S3's measure of user metadata: UTF-8 bytes of each name (without the prefix) and value."""
    total = 0
    for name, value in headers.items(multi=True):
        if name.lower().startswith(_META_PREFIX):
            # Wire bytes: mitmproxy hands over non-UTF-8 header bytes as surrogate escapes.
            name_bytes = name[len(_META_PREFIX) :].encode("utf-8", "surrogateescape")
            total += len(name_bytes) + len(value.encode("utf-8", "surrogateescape"))
    return total


def delete_objects_key_count(body: bytes) -> int:
    """Number of ``<Object>`` entries of a DeleteObjects body; raises MalformedXML."""
    try:
        # defusedxml: no DTDs, entity declarations or external references.
        root = DefusedElementTree.fromstring(body, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, LookupError):  # LookupError: encoding=
        raise S3Error("MalformedXML") from None
    if root.tag.rsplit("}", 1)[-1] != "Delete":
        raise S3Error("MalformedXML")
    return sum(1 for child in root if child.tag.rsplit("}", 1)[-1] == "Object")


class Limits:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._limiter: RateLimiter | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_rate_limit",
            str,  # mitmproxy options have no float type
            "0",
            "Requests per second allowed per client access key (token bucket, e.g. 50 or "
            "0.5); 0: no limit.",
        )
        loader.add_option(
            "gw_rate_burst",
            int,
            0,
            "Requests a client access key may send at once above gw_rate_limit; "
            "0: one second's worth.",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & {"gw_rate_limit", "gw_rate_burst"}:
            return
        try:
            rate = float(ctx.options.gw_rate_limit)
        except ValueError:
            raise OptionsError(
                f"gw_rate_limit must be a number, not {ctx.options.gw_rate_limit!r}"
            ) from None
        if rate != rate or rate < 0 or ctx.options.gw_rate_burst < 0:  # NaN included
            raise OptionsError("gw_rate_limit and gw_rate_burst must not be negative")
        if rate == 0:
            self._limiter = None
            return
        burst = float(ctx.options.gw_rate_burst) or rate
        self._limiter = RateLimiter(rate, burst)

    # ----------------------------------------------------------------- requests

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None:
            return
        flow.metadata[_ADMITTED] = True
        try:
            self._check_headers(flow)
        except S3Error as error:
            refuse(flow, error)

    def _check_headers(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        assert state is not None
        operation = state.operation
        request = flow.request
        fields = request.headers.fields
        size = len(request.method) + len(request.path) + sum(len(n) + len(v) + 4 for n, v in fields)
        if len(fields) > MAX_HEADER_COUNT or size > MAX_HEADER_BYTES:
            raise S3Error(
                "RequestHeaderSectionTooLarge",
                "Your request header section exceeds the maximum allowed size.",
                status=400,
            )
        if len(operation.key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
            raise S3Error("KeyTooLongError")
        if user_metadata_bytes(request.headers) > MAX_USER_METADATA_BYTES:
            raise S3Error("MetadataTooLarge")
        if operation.name == "DeleteObjects":
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_XML_BODY:
                raise S3Error("MalformedXML")
        if self._limiter is not None:
            access_key_id = self._verified_access_key(flow)
            if access_key_id is not None and not self._limiter.allow(access_key_id):
                raise S3Error("SlowDown")

    def _verified_access_key(self, flow: http.HTTPFlow) -> str | None:
        """The access key id of a request whose signature verifies, else None.

        Only a verified request spends tokens; ClientAuth answers the refusals
        and reuses the verification kept on the flow state.
        """
        state = state_of(flow)
        assert state is not None
        try:
            state.auth = verify_request(flow.request, self._config.current().credentials)
        except S3Error:
            return None
        access_key: str = state.auth.access_key
        return access_key

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or flow.request.stream:
            return
        if state.operation.name != "DeleteObjects":
            return
        body = flow.request.raw_content or b""
        try:
            if len(body) > MAX_XML_BODY or delete_objects_key_count(body) > MAX_DELETE_KEYS:
                raise S3Error("MalformedXML")
        except S3Error as error:
            respond_error(flow, error)

    # ----------------------------------------------------------------- backend failures

    def error(self, flow: http.HTTPFlow) -> None:
        """Answer S3's XML instead of mitmproxy's HTML page when the backend failed
        before any response reached the client, or when mitmproxy refused the
        request's framing (Content-Length with Transfer-Encoding)."""
        state = state_of(flow)
        if state is None or state.error is not None or state.aborted:
            return
        if flow.error is None:
            return
        if flow.response is not None and flow.response.stream:
            return  # its headers may have gone out: the cut connection is the answer
        message = flow.error.msg
        if message.startswith("Client disconnected") or message == flow.error.KILLED_MESSAGE:
            return
        if not flow.request.http_version.startswith("HTTP/1"):
            return  # mitmproxy's own answer keeps HTTP/2 framing intact
        if flow.client_conn.tls_established:
            # The writer below is the raw socket, under mitmproxy's TLS layer: bytes
            # written there would reach the client as a broken TLS record.
            return
        if state.upload_error is not None:
            # A streamed upload that failed a check at the end of its body; the
            # gateway closed the TLS backend connection before its last piece.
            error = state.upload_error
            state.error = error
        elif flow.metadata.get(_ADMITTED) and deadline_expired(flow):
            # A backend too slow to connect or to answer: S3's "try again" (503).
            error = S3Error("ServiceUnavailable")
            state.error = error
        elif flow.metadata.get(_ADMITTED):
            error = S3Error(BAD_GATEWAY)
            log.warning("s3gw: backend failed before answering %s: %s", state.request_id, message)
            # state.error stays unset: the observers report the flow as a backend
            # failure ("unreachable"), as before (addons/observe.py).
        elif _SMUGGLING in message:
            error = S3Error(
                "InvalidRequest", "Content-Length and Transfer-Encoding must not both be sent."
            )
            state.error = error
        else:
            return
        writer = _client_writer(flow)
        if writer is None:
            return
        request_id = state.request_id
        body = (
            b""
            if flow.request.method == "HEAD"
            else error_xml(error, resource=state.operation.resource, request_id=request_id)
        )
        response = http.Response.make(
            error.status,
            body,
            {
                "Content-Type": "application/xml",
                "x-amz-request-id": request_id,
                "x-s3gw-request-id": request_id,
                "Connection": "close",
            },
        )
        if flow.request.method == "HEAD":
            response.headers["x-amz-error-code"] = error.code
            response.headers["content-length"] = "0"
        writer.write(assemble_response(response))
        # Closed now: mitmproxy's own error page, written after this hook, is dropped.
        writer.close()


def _client_writer(flow: http.HTTPFlow) -> asyncio.StreamWriter | None:
    """The client connection's writer, if mitmproxy would still write its own error page
    there (it checks the same state; a parse error was already answered and closed)."""
    if not flow.client_conn.state & ConnectionState.CAN_WRITE:
        return None
    try:
        handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
    except AttributeError:
        return None
    if handler is None:
        return None
    io = handler.transports.get(handler.client)
    if io is None or io.writer is None or io.writer.transport.is_closing():
        return None
    writer: asyncio.StreamWriter = io.writer
    return writer

"""What the observers (metrics, access log, tracing) share.

A flow's :class:`Outcome` (status, error code, sizes, duration) as the client
saw it, the encrypt/decrypt figures of its body, and the redaction of secrets
from anything an observer writes out. The observers sit at the end of the
addon chain, so their hooks see the flow after every other addon changed it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from mitmproxy import http

from addons.config import Config
from addons.deadlines import deadline_expired
from addons.flowstate import CryptoStats, FlowState
from addons.s3.errors import BAD_GATEWAY, ERROR_CODES
from addons.s3.ops import Action, S3Operation
from addons.settings import Observability
from crypto import FormatError, RangeNotSatisfiable, ciphertext_length, plan_range
from crypto import plaintext_length as plaintext_length_of
from crypto.format import chunk_count

REDACTED = "REDACTED"

# Headers whose values are credentials: never written out, whatever is configured.
REDACTED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-amz-security-token",
        "x-amz-server-side-encryption-customer-key",
        "x-amz-copy-source-server-side-encryption-customer-key",
    }
)
# Presigned-URL parameters carrying the signature or credentials (SigV4, and SigV2's
# Signature, which the gateway refuses but still logs).
REDACTED_PARAMS = frozenset(
    {"x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature"}
)
# Query parameters that name (parts of) object keys.
KEY_PARAMS = frozenset({"prefix", "marker", "start-after", "key-marker", "continuation-token"})

# Error codes the client authentication answers with.
AUTH_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "AuthorizationQueryParametersError",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "MissingSecurityHeader",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
    }
)
# Codes of flows that ended without a complete answer (not S3 codes).
CLIENT_DISCONNECTED = "ClientDisconnected"
CONNECTION_ABORTED = "ConnectionAborted"
_GATEWAY_CODES = frozenset({BAD_GATEWAY, CLIENT_DISCONNECTED, CONNECTION_ABORTED})

_ERROR_CODE_IN_BODY = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_OPERATION_NAME = re.compile(r"[A-Za-z0-9]{1,64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_OUTCOME_KEY = "s3gw.outcome"


def observability(config: Config) -> Observability:
    """The YAML ``observability`` settings, or the defaults before any are loaded."""
    return config.current().observability if config.ready else Observability()


def bounded_code(code: str) -> str:
    """``code`` if it is one the gateway knows, else ``Other`` (for metric labels)."""
    return code if code in ERROR_CODES or code in _GATEWAY_CODES else "Other"


def operation_label(operation: S3Operation) -> str:
    name = operation.name
    return name if _OPERATION_NAME.fullmatch(name) else "Unknown"


@dataclass(frozen=True)
class Outcome:
    """How a flow ended, as its client saw it."""

    status: int  # sent, or the one that would have been sent for a closed connection
    error_code: str  # S3 error code, a gateway code (see above), or ""
    aborted: bool  # the connection was closed before the answer was complete
    duration: float  # seconds from the request's first byte to the end
    request_bytes: int  # the request's Content-Length as the client sent it
    response_bytes: int  # the response's Content-Length (0 if it had no body)

    @property
    def status_class(self) -> str:
        return "aborted" if self.aborted else f"{self.status // 100}xx"


def outcome(flow: http.HTTPFlow, state: FlowState) -> Outcome:
    """The outcome of a finished flow (computed once, by the first observer asking)."""
    cached = flow.metadata.get(_OUTCOME_KEY)
    if isinstance(cached, Outcome):
        return cached
    response = flow.response
    aborted = state.aborted or flow.error is not None
    code = state.error.code if state.error is not None else ""
    if response is not None:
        status = response.status_code
        if not code and status >= 400:
            code = _response_error_code(response)
    elif state.error is not None:
        status = state.error.status  # refused by closing the connection
    elif flow.error is not None and flow.error.msg.startswith("Client disconnected"):
        status, code = 499, CLIENT_DISCONNECTED
    else:
        status, code = 502, BAD_GATEWAY  # mitmproxy answers 502 when the backend fails
    if aborted and not code:
        code = CONNECTION_ABORTED
    result = Outcome(
        status=status,
        error_code=code,
        aborted=aborted,
        duration=max(0.0, time.monotonic() - state.started),
        request_bytes=state.request_length or 0,
        response_bytes=_response_bytes(flow),
    )
    flow.metadata[_OUTCOME_KEY] = result
    return result


def _response_error_code(response: http.Response) -> str:
    code = str(response.headers.get("x-amz-error-code", ""))
    if code:
        return code
    body = response.raw_content if not response.stream else None
    match = _ERROR_CODE_IN_BODY.search(body[:4096]) if body else None
    return match.group(1).decode() if match else ""


def _response_bytes(flow: http.HTTPFlow) -> int:
    response = flow.response
    if response is None or flow.request.method == "HEAD":
        return 0
    if response.status_code < 200 or response.status_code in (204, 304):
        return 0
    length = response.headers.get("content-length", "")
    if length.isdigit():
        return int(length)
    if not response.stream and response.raw_content is not None:
        return len(response.raw_content)
    return 0  # streamed without a length: not counted


def is_auth_failure(state: FlowState) -> bool:
    """The client's signature or credentials were refused."""
    error = state.error
    if error is None:
        return False
    return state.auth is None or error.code == "SignatureDoesNotMatch"


def backend_error(flow: http.HTTPFlow, state: FlowState, result: Outcome) -> str | None:
    """Why the backend failed this flow: ``unreachable``, ``status_5xx``, ``bad_response``."""
    if state.backend_status is not None and state.backend_status >= 500:
        return "status_5xx"
    if state.error is not None and state.error.code == BAD_GATEWAY:
        return "bad_response"
    if flow.response is None and state.error is None and result.error_code == BAD_GATEWAY:
        return "unreachable"
    if deadline_expired(flow):
        return "unreachable"  # it missed a connect or read deadline (addons/deadlines.py)
    return None


def crypto_stats(flow: http.HTTPFlow, state: FlowState, chunk_size: int) -> CryptoStats | None:
    """What encrypting or decrypting the body did: the addon's own count if it kept
    one, else derived from the sizes the client and backend saw."""
    if state.crypto is not None:
        return state.crypto
    if state.encryption != "s3g1":
        return None
    action = state.operation.action
    if action is Action.ENCRYPT_UPLOAD:
        return _derived_encrypt(flow, state, chunk_size)
    if action is Action.DECRYPT_DOWNLOAD:
        return _derived_decrypt(flow, state, chunk_size)
    return None


def _derived_encrypt(flow: http.HTTPFlow, state: FlowState, chunk_size: int) -> CryptoStats:
    stats = CryptoStats("encrypt")
    length = flow.request.headers.get("content-length", "")
    if length.isdigit():  # set to the ciphertext length by the encrypting addon
        stats.ciphertext_bytes = int(length)
        try:
            stats.plaintext_bytes = plaintext_length_of(stats.ciphertext_bytes, chunk_size)
        except FormatError:
            stats.plaintext_bytes = 0
        stats.chunks = chunk_count(stats.plaintext_bytes, chunk_size)
    if state.streamed_request:
        stats.started = flow.request.timestamp_start
        stats.finished = flow.request.timestamp_end
    failure = state.upload_error or (state.error if state.aborted else None)
    if failure is not None:
        stats.error = failure.code
    elif state.aborted:
        stats.error = CONNECTION_ABORTED
    return stats


def _derived_decrypt(flow: http.HTTPFlow, state: FlowState, chunk_size: int) -> CryptoStats | None:
    response = flow.response
    if response is None or response.status_code not in (200, 206):
        if state.error is not None and state.error.status >= 500:
            return CryptoStats("decrypt", error=state.error.code)  # e.g. a key not in the keyring
        return None
    stats = CryptoStats("decrypt")
    stats.started = response.timestamp_start
    stats.finished = response.timestamp_end
    length = response.headers.get("content-length", "")
    plaintext = int(length) if length.isdigit() else 0
    stats.plaintext_bytes = plaintext
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    if match is not None and response.status_code == 206:
        first, last, size = (int(g) for g in match.groups())
        try:
            plan = plan_range(first, last, size, chunk_size)
        except RangeNotSatisfiable:
            pass
        else:
            stats.chunks = plan.last_chunk - plan.first_chunk + 1
            stats.ciphertext_bytes = plan.ciphertext_length
    else:
        stats.chunks = chunk_count(plaintext, chunk_size)
        stats.ciphertext_bytes = ciphertext_length(plaintext, chunk_size)
    if state.aborted or flow.error is not None:
        stats.error = state.error.code if state.error is not None else CONNECTION_ABORTED
    return stats


def client_headers(flow: http.HTTPFlow, state: FlowState) -> http.Headers:
    """The request headers as the client sent them."""
    return state.client_headers if state.client_headers is not None else flow.request.headers


def client_target(flow: http.HTTPFlow, state: FlowState) -> str:
    """The request target (path and query) as the client sent it."""
    return state.client_target or flow.request.path


def finish_once(flow: http.HTTPFlow, observer: str) -> bool:
    """True the first time ``observer`` finishes this flow (response or error hook)."""
    key = f"s3gw.finished.{observer}"
    if flow.metadata.get(key):
        return False
    flow.metadata[key] = True
    return True


class Redactor:
    """Removes credentials (and, if asked, object keys) from what observers write."""

    def __init__(self, headers: Iterable[str] = (), *, hide_keys: bool = False) -> None:
        extra = {h.strip().lower() for h in headers if h.strip()}
        self.headers = REDACTED_HEADERS | extra
        self.params = REDACTED_PARAMS | self.headers
        if hide_keys:
            self.params |= KEY_PARAMS
        self.hide_keys = hide_keys

    def header(self, name: str, value: str) -> str:
        if name.lower() in self.headers:
            return REDACTED
        return self.url(value) if "?" in value else value

    def query(self, raw_query: str) -> str:
        parts = []
        for part in raw_query.split("&"):
            name, eq, _ = part.partition("=")
            if unquote_plus(name).strip().lower() in self.params:
                part = f"{name}={REDACTED}" if eq else f"{name}"
            parts.append(part)
        return "&".join(parts)

    def url(self, url: str) -> str:
        """A URL or request target with redacted query values (e.g. a Referer)."""
        base, sep, query = url.partition("?")
        return base + sep + self.query(query) if sep else base

    def target(self, target: str, operation: S3Operation | None) -> str:
        """The request target (path and query) to write out."""
        path, sep, query = target.partition("?")
        if self.hide_keys and operation is not None and operation.key:
            path = f"/{quote(operation.bucket, safe='')}/{REDACTED}"
        return path + sep + self.query(query) if sep else path

    def key(self, operation: S3Operation) -> str | None:
        """The object key to write out (None if hidden or there is none)."""
        if self.hide_keys or not operation.key:
            return None
        return operation.key

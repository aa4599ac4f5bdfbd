"""Helpers shared by the addons that encrypt and decrypt object bodies
(``ObjectCrypto`` for single-PUT objects, ``Multipart`` for multipart uploads).

Uploads: the envelope in the object's metadata (reserved name, metadata
budget), and turning a verified plaintext request body into one encrypted
frame, read whole or streamed. Downloads: which bytes of the stored object a
backend answer holds, and how failures are reported.
"""

from __future__ import annotations

import logging
import re
from functools import partial

from mitmproxy import http

from addons.bodycheck import UploadChecks
from addons.flowstate import (
    FlowState,
    abort_connections,
    answer_instead_of_backend,
    error_body_response,
    state_of,
)
from addons.s3.errors import S3Error
from addons.transforms import (
    Cipher,
    DownloadTransform,
    InputWindow,
    ReplaceBodyTransform,
    UploadTransform,
)
from crypto import (
    CryptoError,
    Envelope,
    FrameEncryptor,
    LengthMismatch,
    RangeNotSatisfiable,
    RangeRequest,
    UnknownKeyId,
)
from crypto.profiles import ProviderProfile, metadata_budget
from crypto.ranges import PartsRangePlan, RangePlan, content_range_unsatisfied

log = logging.getLogger("s3gw")

ENVELOPE_HEADER = "x-amz-meta-s3gw"
ENCRYPTION_HEADER = "x-s3gw-encryption"
# Uploads up to this size are read whole before they are forwarded (see encrypt_request_body).
SMALL_UPLOAD = 1024 * 1024
# Headers describing the body as the client sent it; they do not apply to the ciphertext.
_UPLOAD_BODY_HEADERS = (
    "content-md5",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "x-amz-sdk-checksum-algorithm",
    "transfer-encoding",
)
# Checksums the backend computed over ciphertext (or the whole object) must not reach clients.
_CHECKSUM_HEADER = re.compile(rb"x-amz-checksum-.*|content-md5", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def drop_checksum_headers(headers: http.Headers) -> None:
    # On the raw fields: it runs on every object answer, and a lookup per header
    # name cost 3% of a small request.
    kept = tuple(field for field in headers.fields if not _CHECKSUM_HEADER.fullmatch(field[0]))
    if len(kept) != len(headers.fields):
        headers.fields = kept


# -- uploads ------------------------------------------------------------------


def reject_reserved_metadata(headers: http.Headers) -> None:
    if ENVELOPE_HEADER in headers:
        raise S3Error("InvalidArgument", f"The metadata key {ENVELOPE_HEADER} is reserved.")


def add_envelope(headers: http.Headers, envelope: Envelope, provider: ProviderProfile) -> None:
    """Store ``envelope`` in the request's metadata, within the provider's budget."""
    headers[ENVELOPE_HEADER] = envelope.encode()
    budget = metadata_budget(provider, headers.items(multi=True))
    if budget.exceeded:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size"
            f" ({budget.used} of {budget.limit} bytes, including the gateway's envelope).",
        )
    if budget.near_limit:
        log.warning("s3gw: object metadata uses %d of %d bytes", budget.used, budget.limit)


class PlainBody:
    """The cipher of a ``passthrough`` bucket: the verified plaintext, unchanged.

    It still counts the bytes, as ``FrameEncryptor`` does, so a body that does
    not match its announced length never reaches the backend complete.
    """

    def __init__(self, plaintext_length: int) -> None:
        self.ciphertext_length = plaintext_length
        self._remaining = plaintext_length

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if len(data) > self._remaining:
            raise LengthMismatch("more plaintext than the announced length")
        self._remaining -= len(data)
        return [bytes(data)] if data else []

    def finalize(self) -> list[bytes]:
        if self._remaining:
            raise LengthMismatch(f"plaintext ended {self._remaining} bytes early")
        return []

    def close(self) -> None:
        pass


def pass_request_body(flow: http.HTTPFlow, state: FlowState, checks: UploadChecks) -> None:
    """Forward a verified, decoded plaintext body (bucket policy ``passthrough``)."""
    encrypt_request_body(flow, state, PlainBody(checks.plaintext_length), checks)
    state.encryption = "none"


def encrypt_request_body(
    flow: http.HTTPFlow,
    state: FlowState,
    encryptor: FrameEncryptor | PlainBody,
    checks: UploadChecks,
) -> None:
    """Make the request carry ``encryptor``'s frame instead of the client's body.

    The headers now describe the ciphertext. Bodies up to ``SMALL_UPLOAD`` are
    checked whole before anything is forwarded (``state.upload``, run by
    ``ObjectCrypto.request``), so a bad digest gets its S3 error answer instead
    of a closed connection; larger ones are streamed.
    """
    headers = flow.request.headers
    encodings = [
        e.strip()
        for e in headers.get("content-encoding", "").split(",")
        if e.strip() and e.strip().lower() != "aws-chunked"
    ]
    headers.pop("content-encoding", None)
    if encodings:
        headers["content-encoding"] = ", ".join(encodings)
    for name in _UPLOAD_BODY_HEADERS:
        headers.pop(name, None)
    drop_checksum_headers(headers)
    headers["content-length"] = str(encryptor.ciphertext_length)
    state.encryption = "s3g1"
    if checks.plaintext_length <= SMALL_UPLOAD:
        state.upload = UploadTransform(
            encryptor,
            decoder=checks.decoder,
            verifiers=checks.verifiers,
            finish_hooks=checks.finish_hooks,
            on_error=lambda error, _: _record_upload_error(state, error),
        )
        return
    flow.request.stream = UploadTransform(
        encryptor,
        decoder=checks.decoder,
        verifiers=checks.verifiers,
        finish_hooks=checks.finish_hooks,
        on_error=partial(_fail_streamed_upload, flow, state),
    )
    state.streamed_request = True


def _fail_streamed_upload(
    flow: http.HTTPFlow, state: FlowState, error: Exception, body_complete: bool
) -> None:
    """A streamed upload failed a check. The backend never gets its last piece, so
    it stores nothing. A client still sending is cut off; one that has sent its
    whole body (a digest checked at the end) gets the S3 error.

    Towards a plain-HTTP backend the error is fed to mitmproxy as the backend's
    answer. Past a TLS backend connection it cannot be: that connection is
    closed, and ``Limits.error`` answers the client (mitmproxy's own 502 page
    if the client uses TLS, which only mitmproxy can write to).
    """
    if not body_complete:
        abort_stream(flow, error)
        return
    _record_upload_error(state, error)
    assert state.upload_error is not None
    log.info(
        "s3gw: refusing %s %s at the end of its body: %s",
        flow.request.method,
        state.operation.resource,
        state.upload_error,
    )
    if flow.server_conn.tls:
        abort_connections(flow, client=False)
    else:
        answer_instead_of_backend(flow, state.upload_error)


def _record_upload_error(state: FlowState, error: Exception) -> None:
    if isinstance(error, S3Error):
        state.upload_error = error
    elif isinstance(error, LengthMismatch):
        state.upload_error = S3Error("IncompleteBody")
    else:
        log.error("s3gw: upload of %s failed: %s", state.operation.resource, error)
        state.upload_error = S3Error("InternalError")


def abort_stream(flow: http.HTTPFlow, error: Exception) -> None:
    """A streamed body failed: log why and close both connections."""
    state = state_of(flow)
    resource = state.operation.resource if state else flow.request.path
    log.error("s3gw: aborting %s %s: %s", flow.request.method, resource, error)
    if state is not None and isinstance(error, S3Error):
        state.error = error
    abort_connections(flow)


# -- downloads ----------------------------------------------------------------


class ByteWindow:
    """Bytes ``first..last`` (inclusive) of a stored object of ``total`` bytes."""

    def __init__(self, first: int, last: int, total: int) -> None:
        self.first, self.last, self.total = first, last, total

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.last == self.total - 1


def backend_window(response: http.Response) -> ByteWindow | None:
    """Which bytes of the stored object the backend's body holds."""
    return headers_window(response.headers)


def headers_window(headers: http.Headers) -> ByteWindow | None:
    """Which bytes of the stored object a backend answer with ``headers`` holds."""
    content_range = headers.get("content-range")
    # Trust Content-Range even on a 200: rclone answers ranged reads that way.
    if content_range:
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None:
            return None
        return ByteWindow(int(match[1]), int(match[2]), int(match[3]))
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    return ByteWindow(0, int(length) - 1, int(length))


def check_covers(window: ByteWindow, first: int, last: int) -> None:
    if window.first > first or window.last < last:
        raise S3Error(
            "InternalError",
            "The ranged read does not cover the requested bytes"
            " (was the object written with another chunk size?).",
        )


def resolve_or_answer_416(
    flow: http.HTTPFlow, state: FlowState, requested: RangeRequest, size: int
) -> tuple[int, int] | None:
    """The first and last byte ``requested`` names in an object of ``size`` bytes, or
    None once the backend's answer has been replaced by S3's 416."""
    try:
        return requested.resolve(size)
    except RangeNotSatisfiable:
        answer_unsatisfiable(flow, state, size)
        return None


def answer_unsatisfiable(flow: http.HTTPFlow, state: FlowState, size: int) -> None:
    """Replace the backend's answer with S3's 416 for a range outside ``size`` bytes."""
    response = flow.response
    assert response is not None
    error = S3Error(
        "InvalidRange",
        extra={"RangeRequested": state.range_header, "ActualObjectSize": str(size)},
    )
    body = error_body_response(flow, error)
    response.headers["content-range"] = content_range_unsatisfied(size)
    response.stream = ReplaceBodyTransform(body)


def answer_head_range(flow: http.HTTPFlow, state: FlowState, size: int) -> None:
    """Apply the client's Range to a HEAD answer for an object of ``size`` plaintext bytes.

    The Range is never sent to the backend for HEAD (it would apply to the
    ciphertext); S3 answers 206 with the range's length, or 416.
    """
    response = flow.response
    requested = state.range_request
    if response is None or requested is None:
        return
    try:
        first, last = requested.resolve(size)
    except RangeNotSatisfiable:
        response.status_code = 416
        response.reason = ""
        response.headers["content-range"] = content_range_unsatisfied(size)
        response.headers["content-length"] = "0"
        response.headers["x-amz-error-code"] = "InvalidRange"
        return
    response.status_code = 206
    response.reason = ""
    response.headers["content-range"] = f"bytes {first}-{last}/{size}"
    response.headers["content-length"] = str(last - first + 1)


def serve_planned_range(
    flow: http.HTTPFlow,
    decryptor: Cipher,
    plan: RangePlan | PartsRangePlan,
    window: ByteWindow,
) -> None:
    """Answer 206 with the plan's plaintext range, decrypted from the backend's window."""
    response = flow.response
    assert response is not None
    response.status_code = 206
    response.headers["content-range"] = plan.content_range
    response.headers["content-length"] = str(plan.length)
    response.stream = DownloadTransform(
        decryptor,
        window=InputWindow(plan.ciphertext_first - window.first, plan.ciphertext_length),
        on_error=partial(abort_stream, flow),
    )


def answer_failure(flow: http.HTTPFlow, state: FlowState, error: S3Error | CryptoError) -> None:
    """Replace a backend answer that cannot be served by the S3 error document."""
    response = flow.response
    assert response is not None
    if isinstance(error, CryptoError):
        log.error("s3gw: cannot decrypt %s: %s", state.operation.resource, error)
        error = crypto_error(error)
    elif error.status >= 500:
        log.error("s3gw: cannot serve %s: %s", state.operation.resource, error.message)
    response.stream = ReplaceBodyTransform(error_body_response(flow, error))


def crypto_error(error: CryptoError) -> S3Error:
    if isinstance(error, UnknownKeyId):
        message = "The object's key-encryption key is not in the gateway's keyring."
    else:
        message = "The object could not be decrypted by the gateway."
    return S3Error("InternalError", message)


def if_range_refused(flow: http.HTTPFlow, requested: RangeRequest | None) -> bool:
    """Whether the backend served a whole object because ``If-Range`` did not match.

    A 200 that carries a Content-Range is still a range (rclone answers that way).
    """
    response = flow.response
    return (
        requested is not None
        and response is not None
        and response.status_code == 200
        and "if-range" in flow.request.headers
        and "content-range" not in response.headers
    )

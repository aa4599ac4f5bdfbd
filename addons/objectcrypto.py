"""Encrypts object bodies on upload and decrypts them on download.

PutObject: the plaintext body (plain or ``aws-chunked``) is verified against
the digests the client sent and encrypted as one S3G1 frame; the envelope goes
into one ``x-amz-meta-*`` header and ``Content-Length`` becomes the ciphertext
length. GetObject/HeadObject: the envelope is opened, the body decrypted, and
sizes, ranges and headers are translated back to the plaintext view.
In a ``passthrough`` bucket (``bucket_policies``) PutObject bodies are verified
and stored as sent; objects there that carry an envelope are still decrypted.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import NamedTuple
from urllib.parse import quote, unquote

from mitmproxy import http

from addons.backend import OBJECT_CHANGED, get_stored_range, head_object
from addons.bodycheck import upload_checks
from addons.bodycrypto import (
    ENCRYPTION_HEADER,
    ENVELOPE_HEADER,
    abort_stream,
    add_envelope,
    answer_failure,
    answer_head_range,
    backend_window,
    check_covers,
    crypto_error,
    drop_checksum_headers,
    encrypt_request_body,
    if_range_refused,
    pass_request_body,
    reject_reserved_metadata,
    resolve_or_answer_416,
    serve_planned_range,
)
from addons.config import Config
from addons.failsafe import fail_closed, fail_closed_response
from addons.flowstate import (
    FlowState,
    active_state,
    refuse,
    respond_error,
    state_of,
)
from addons.multipartreads import (
    StoredObject,
    object_path,
    part_headers_before,
    stored_part_count,
)
from addons.route import flow_backend, side_request_target
from addons.s3.errors import S3Error
from addons.s3.ops import Action, refusal_message
from addons.settings import BucketPolicy, Settings
from addons.transforms import (
    DownloadTransform,
    InputWindow,
    PlainWindowTransform,
    ReplaceBodyTransform,
)
from crypto import (
    CryptoError,
    DataKey,
    Envelope,
    FrameEncryptor,
    ObjectDecryptor,
    RangeDecryptor,
    RangeNotSatisfiable,
    RangeRequest,
    ciphertext_length,
    metadata_budget,
    parse_range,
    plan_range,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH

log = logging.getLogger("s3gw")

MAX_OBJECT_SIZE = 5 * 1024**4  # S3's single-object limit
# A copy must not turn plaintext into an object of a bucket whose objects are encrypted.
UNENCRYPTED_COPY_SOURCE = (
    "The source object is not encrypted, and the destination bucket's policy is encrypt:"
    " a server-side copy would store it unencrypted. Download the object and upload it"
    " through the gateway instead."
)
PLAINTEXT_READS_OFF = "The object is not encrypted and plaintext reads are off."
LENGTH_MISMATCH = "The stored object's length does not match its envelope."
# An object without an envelope whose bytes are an S3G1 frame: never served as data.
STORED_CIPHERTEXT = "The object's data is encrypted but its envelope metadata is missing."
# An ETag no object has: a copy that must not happen unverified can then only fail.
_NO_ETAG = '"s3gw-unverified-copy-source"'


def plaintext_allowed(state: FlowState, settings: Settings) -> bool:
    """Whether an object without an envelope may be served to this request."""
    return settings.allow_plaintext_reads or state.policy is BucketPolicy.PASSTHROUGH


class ObjectCrypto:
    def __init__(self, config: Config) -> None:
        self._config = config

    # -- requests -----------------------------------------------------------

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None:
            return
        action = state.operation.action
        try:
            if action is Action.REFUSE:
                raise S3Error("NotImplemented", refusal_message(state.operation))
            if action is Action.ENCRYPT_UPLOAD and state.policy is BucketPolicy.PASSTHROUGH:
                self._begin_plain_upload(flow, state)
            elif action is Action.ENCRYPT_UPLOAD:
                self._begin_upload(flow, state, self._config.current())
            elif action is Action.COPY:
                await self._begin_copy(flow, state, self._config.current())
            elif action is Action.DECRYPT_DOWNLOAD:
                await self._begin_download(flow, state, self._config.current())
            elif action is Action.HEAD_OBJECT:
                # A Range on HEAD is answered from the plaintext size, never forwarded.
                state.range_header = flow.request.headers.pop("range", "")
                state.range_request = parse_range(state.range_header)
        except S3Error as error:
            refuse(flow, error)

    def _begin_upload(self, flow: http.HTTPFlow, state: FlowState, settings: Settings) -> None:
        headers = flow.request.headers
        reject_reserved_metadata(headers)
        checks = upload_checks(headers, state.auth)
        if checks.plaintext_length > MAX_OBJECT_SIZE:
            raise S3Error("EntityTooLarge")
        with DataKey.generate(settings.algorithm, settings.chunk_size) as data_key:
            encryptor = FrameEncryptor(data_key, checks.plaintext_length)
            envelope = Envelope.seal(data_key, settings.keyring, frame=encryptor.header)
        try:
            add_envelope(headers, envelope, settings.provider)
        except S3Error:
            encryptor.close()
            raise
        encrypt_request_body(flow, state, encryptor, checks)

    def _begin_plain_upload(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """PutObject into a ``passthrough`` bucket: verified, decoded, stored as sent."""
        headers = flow.request.headers
        reject_reserved_metadata(headers)  # a forged envelope would be "decrypted"
        checks = upload_checks(headers, state.auth)
        if checks.plaintext_length > MAX_OBJECT_SIZE:
            raise S3Error("EntityTooLarge")
        pass_request_body(flow, state, checks)

    async def _begin_copy(self, flow: http.HTTPFlow, state: FlowState, settings: Settings) -> None:
        """CopyObject stays server-side: the data key travels in the envelope.

        With ``COPY`` the backend copies the envelope along with the metadata.
        With ``REPLACE`` the client's new metadata would drop it, so the
        source's envelope is read (HEAD) and added, re-wrapped under the
        active KEK. Into an ``encrypt`` bucket, a source without an envelope is
        refused (also read with a HEAD): the copy would store plaintext there.
        The copy is made conditional on the source ETag seen, so a concurrent
        overwrite cannot pair other bytes with this envelope or slip plaintext in.
        """
        headers = flow.request.headers
        reject_reserved_metadata(headers)
        replace = headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        into_encrypted = state.policy is BucketPolicy.ENCRYPT
        if not replace and not into_encrypted:
            return
        source = copy_source_path(headers.get("x-amz-copy-source", ""))
        backend, source = side_request_target(flow, settings, source)  # the source's bucket
        status, source_headers = await head_object(backend, source)
        if status != 200:
            if into_encrypted:
                # Unverified: the backend may answer its own error (NoSuchKey...), never copy.
                headers["x-amz-copy-source-if-match"] = _NO_ETAG
            return  # the backend answers the copy with the right error
        etag = source_headers.get("etag", "")
        wanted = headers.get("x-amz-copy-source-if-match")
        if wanted is not None and wanted.strip() != etag:
            raise S3Error("PreconditionFailed", extra={"Condition": "x-amz-copy-source-If-Match"})
        headers["x-amz-copy-source-if-match"] = etag
        value = source_headers.get(ENVELOPE_HEADER)
        if value is None:
            if into_encrypted:
                raise S3Error("InvalidRequest", UNENCRYPTED_COPY_SOURCE)
            return  # an unencrypted source stays as it is stored (passthrough bucket)
        if not replace:
            return  # the envelope is copied with the rest of the metadata
        try:
            envelope = Envelope.decode(value).rewrap(settings.keyring)
        except CryptoError as error:
            raise crypto_error(error) from None
        headers[ENVELOPE_HEADER] = envelope.encode()
        budget = metadata_budget(settings.provider, headers.items(multi=True))
        if budget.exceeded:
            raise S3Error("MetadataTooLarge")

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or state.upload is None:
            return
        ciphertext = state.upload.run_on_complete_body(flow.request.raw_content or b"")
        if state.upload_error is not None:
            respond_error(flow, state.upload_error)
            return
        flow.request.content = ciphertext

    async def _begin_download(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings
    ) -> None:
        state.range_header = flow.request.headers.get("range", "")
        requested = parse_range(state.range_header)
        state.range_request = requested
        if requested is None:
            # S3 ignores what it cannot serve as one range; the backend must not see it
            # (a multi-range answer over ciphertext would be garbage).
            flow.request.headers.pop("range", None)
            return
        if "if-range" in flow.request.headers and not await _if_range_holds(flow, settings):
            # S3 serves the whole object when If-Range does not match; backends
            # that ignore If-Range would serve the range instead.
            for name in ("range", "if-range"):
                flow.request.headers.pop(name, None)
            state.range_request = None
            return
        flow.request.headers.pop("if-range", None)
        chunk_size = settings.chunk_size
        if requested.start is None:
            # A suffix range needs the object's size: an enlarged suffix could pass the
            # end of the stored object, which some backends refuse instead of clamping.
            stored = await stored_shape(flow, settings)
            if stored is not None:
                size, chunk_size = stored.size, stored.chunk_size
                if size == 0 and requested.end:
                    # S3 serves an empty object whole (200) for a non-empty suffix.
                    state.range_request = None
                    flow.request.headers.pop("range", None)
                    return
                try:
                    first, last = requested.resolve(size)
                except RangeNotSatisfiable:
                    # Fetch a range the backend has; the answer becomes the 416.
                    first, last = 0, 0
                requested = RangeRequest(first, last)
        flow.request.headers["range"] = covering_range(
            requested,
            chunk_size,
            plaintext_possible=plaintext_allowed(state, settings),
            prefix_limit=settings.max_buffered_body,
        )

    # -- responses ----------------------------------------------------------

    @fail_closed_response
    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        response = flow.response
        if state is None or response is None:
            return
        action = state.operation.action
        if action not in (Action.DECRYPT_DOWNLOAD, Action.HEAD_OBJECT):
            return
        if response.status_code in (304, 412):
            _hide_envelope(response, head=action is Action.HEAD_OBJECT)
            return
        settings = self._config.current()
        if response.status_code == 416 and state.range_request is not None:
            # The backend refused the covering range itself; its answer would name
            # that range and the stored (ciphertext) size.
            try:
                await self._answer_refused_range(flow, state, settings, state.range_request)
            except (S3Error, CryptoError) as error:
                answer_failure(flow, state, error)
            return
        if response.status_code not in (200, 206):
            return
        if ENVELOPE_HEADER not in response.headers and state.operation.param("partNumber"):
            # Some backends (moto) leave user metadata out of their answers for one part.
            status, headers = await head_object(flow_backend(flow, settings), object_path(flow))
            if status == 200 and ENVELOPE_HEADER in headers:
                response.headers[ENVELOPE_HEADER] = headers[ENVELOPE_HEADER]
        try:
            value = response.headers.get(ENVELOPE_HEADER)
            if value is None:
                await self._serve_plaintext(flow, state, settings)
            else:
                self._serve_encrypted(flow, state, settings, value)
        except (S3Error, CryptoError) as error:
            answer_failure(flow, state, error)

    async def _answer_refused_range(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings, requested: RangeRequest
    ) -> None:
        """S3's 416, or the range itself from an unencrypted object that holds its start
        but ends before the chunks an encrypted one would need (see covering_range)."""
        stored = await stored_shape(flow, settings)
        if stored is None:
            return
        span = resolve_or_answer_416(flow, state, requested, stored.size)
        if span is None:
            return
        first, last = span
        if stored.encrypted:
            # The chunks of a satisfiable range lie within an intact object.
            raise S3Error("InternalError", LENGTH_MISMATCH)
        if not plaintext_allowed(state, settings):
            raise S3Error("AccessDenied", PLAINTEXT_READS_OFF)
        headers, body = await _read_plaintext(flow, settings, first, last, stored.etag)
        response = flow.response
        assert response is not None
        response.status_code = 206
        response.reason = "Partial Content"
        response.headers = headers
        response.headers.pop("transfer-encoding", None)
        response.headers["content-range"] = f"bytes {first}-{last}/{stored.size}"
        response.headers["content-length"] = str(len(body))
        response.headers[ENCRYPTION_HEADER] = "none"
        drop_checksum_headers(response.headers)
        state.encryption = "none"
        response.stream = ReplaceBodyTransform(body)

    async def _serve_plaintext(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings
    ) -> None:
        response = flow.response
        assert response is not None
        if not plaintext_allowed(state, settings):
            raise S3Error("AccessDenied", PLAINTEXT_READS_OFF)
        response.headers[ENCRYPTION_HEADER] = "none"
        state.encryption = "none"
        if state.operation.action is Action.HEAD_OBJECT:
            length = response.headers.get("content-length", "")
            if length.isdigit():
                answer_head_range(flow, state, int(length))
            return
        requested = state.range_request
        window = backend_window(response)
        cut = partial(abort_stream, flow, S3Error("InternalError", STORED_CIPHERTEXT))
        if requested is None or window is None:
            response.stream = PlainWindowTransform(
                None, from_start=response.status_code == 200, on_ciphertext=cut
            )
            return
        span = resolve_or_answer_416(flow, state, requested, window.total)
        if span is None:
            return
        first, last = span
        prefix = b""
        if first < window.first:
            # The backend was asked for the chunks an encrypted object would need
            # (covering_range); the bytes before them come from a side read.
            prefix_last = min(last, window.first - 1)
            _, prefix = await _read_plaintext(
                flow, settings, first, prefix_last, response.headers.get("etag")
            )
        rest = first + len(prefix)  # the first byte the backend's answer serves
        if rest <= last:
            check_covers(window, rest, last)
        drop_checksum_headers(response.headers)
        response.status_code = 206
        response.headers["content-range"] = f"bytes {first}-{last}/{window.total}"
        response.headers["content-length"] = str(last - first + 1)
        response.stream = PlainWindowTransform(
            InputWindow(rest - window.first, max(0, last - rest + 1)),
            from_start=window.first == 0,
            on_ciphertext=cut,
            prefix=prefix,
        )

    def _serve_encrypted(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings, value: str
    ) -> None:
        response = flow.response
        assert response is not None
        envelope = Envelope.decode(value)
        if envelope.multipart:
            return  # served by addons.multipartreads
        if envelope.frame is None:
            raise S3Error("NotImplemented", "Envelopes without a frame are not supported yet.")
        size = envelope.frame.plaintext_length
        state.encryption = "s3g1"
        del response.headers[ENVELOPE_HEADER]
        drop_checksum_headers(response.headers)
        response.headers[ENCRYPTION_HEADER] = "s3g1"
        if state.operation.action is Action.HEAD_OBJECT:
            response.headers["content-length"] = str(size)
            answer_head_range(flow, state, size)
            return
        window = backend_window(response)
        if window is None:
            raise S3Error("InternalError", "The storage backend sent no usable length.")
        if window.total != ciphertext_length(size, envelope.chunk_size):
            raise S3Error("InternalError", LENGTH_MISMATCH)
        data_key = envelope.open(settings.keyring)
        on_error = partial(abort_stream, flow)
        requested: RangeRequest | None = state.range_request
        if_range_failed = if_range_refused(flow, requested)
        if requested is None or if_range_failed:
            if window.first != 0 or window.last != window.total - 1:
                raise S3Error("InternalError", "The storage backend sent a partial object.")
            decryptor = ObjectDecryptor(data_key, expected_frame=envelope.frame)
            data_key.close()
            response.headers["content-length"] = str(size)
            if response.status_code == 206:
                # GetObject?partNumber=1 of a single-part object: the whole object.
                response.headers["content-range"] = f"bytes 0-{max(size - 1, 0)}/{size}"
            response.stream = DownloadTransform(decryptor, window=None, on_error=on_error)
            return
        span = resolve_or_answer_416(flow, state, requested, size)
        if span is None:
            data_key.close()
            return
        first, last = span
        plan = plan_range(first, last, size, envelope.chunk_size)
        check_covers(window, plan.ciphertext_first, plan.ciphertext_last)
        decryptor_range = RangeDecryptor(data_key, envelope.frame, plan)
        data_key.close()
        serve_planned_range(flow, decryptor_range, plan, window)


def _hide_envelope(response: http.Response, *, head: bool) -> None:
    """304 and 412 answers repeat the object's headers: show those of the plaintext."""
    value = response.headers.get(ENVELOPE_HEADER)
    if value is None:
        return
    del response.headers[ENVELOPE_HEADER]
    drop_checksum_headers(response.headers)
    if not head or "content-length" not in response.headers:
        return  # a GET's Content-Length is that of the error document, if any
    try:
        envelope = Envelope.decode(value)
    except CryptoError:
        envelope = None
    if envelope is not None and envelope.frame is not None:
        response.headers["content-length"] = str(envelope.frame.plaintext_length)
    else:
        del response.headers["content-length"]


def covering_range(
    requested: RangeRequest,
    chunk_size: int,
    *,
    plaintext_possible: bool = True,
    prefix_limit: int = 0,
) -> str:
    """A backend range covering ``requested`` whether the object is encrypted or not.

    Encrypted objects need whole chunks; unencrypted (legacy) objects need the
    bytes as asked, which start up to 16 bytes per chunk earlier. The chunks
    are fetched, with no HEAD first: an unencrypted object then gets the bytes
    before them (at most ``prefix_limit``) from a side read, so only legacy
    objects pay for them. Where that gap is larger, the union is fetched.
    When unencrypted objects are not served (``plaintext_possible`` false) only
    the chunks are fetched.
    Multipart objects have a frame header per part before a position, at most
    one per 5 MiB (the gateway's smallest part), so the end goes that much further.
    """
    stride = chunk_size + TAG_LENGTH
    if requested.start is None:
        assert requested.end is not None
        plain = requested.end + chunk_size - 1
        chunks = -(-plain // chunk_size)
        # The last frame's header may be in the suffix too.
        extra = HEADER_LENGTH + part_headers_before(plain)
        return f"bytes=-{plain + TAG_LENGTH * chunks + extra}"
    start = HEADER_LENGTH + (requested.start // chunk_size) * stride
    if plaintext_possible and requested.start < HEADER_LENGTH:
        # From 0 when the range starts within a frame header's length, so that an
        # unencrypted answer can be checked for being an S3G1 frame after all.
        start = 0
    elif plaintext_possible and start - requested.start > prefix_limit:
        start = requested.start
    if requested.end is None:
        return f"bytes={start}-"
    end = HEADER_LENGTH + (requested.end // chunk_size + 1) * stride - 1
    end = max(requested.end, end + part_headers_before(requested.end))
    return f"bytes={start}-{end}"


def copy_source_path(value: str) -> str:
    """The backend path of an ``x-amz-copy-source`` value (``[/]bucket/key[?versionId=v]``)."""
    path, _, query = value.strip().partition("?")
    # Clients send it URL-encoded (most) or raw: normalise to S3's encoding.
    path = "/" + quote(unquote(path.lstrip("/")), safe="/~")
    for item in query.split("&"):
        if item.startswith("versionId="):
            return f"{path}?{item}"
    return path


async def _if_range_holds(flow: http.HTTPFlow, settings: Settings) -> bool:
    """Evaluate ``If-Range`` against the stored object, as S3 does (one HEAD)."""
    condition = flow.request.headers.get("if-range", "").strip()
    status, headers = await head_object(flow_backend(flow, settings), object_path(flow))
    if status != 200:
        return True  # let the backend answer the GET (404, 403...)
    if condition.startswith(('"', "W/")):
        return bool(condition == headers.get("etag", ""))
    since = parsedate_to_datetime_or_none(condition)
    modified = parsedate_to_datetime_or_none(headers.get("last-modified", ""))
    return since is not None and modified is not None and modified <= since


def parsedate_to_datetime_or_none(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


class StoredShape(NamedTuple):
    """What a HEAD tells of the object a GET names."""

    size: int  # plaintext bytes
    chunk_size: int
    encrypted: bool
    etag: str | None


async def stored_shape(
    flow: http.HTTPFlow, settings: Settings, path: str | None = None
) -> StoredShape | None:
    """Plaintext size, chunk size and ETag of the object a request names (or of the
    one at ``path``: a version), from a backend HEAD. ``None`` if it cannot be had."""
    path = path or object_path(flow)
    status, headers = await head_object(flow_backend(flow, settings), path)
    if status != 200:
        return None
    value = headers.get(ENVELOPE_HEADER)
    etag = headers.get("etag")
    try:
        if value is not None:
            envelope = Envelope.decode(value)
            if envelope.frame is not None:
                return StoredShape(envelope.frame.plaintext_length, envelope.chunk_size, True, etag)
            if envelope.multipart:
                stored = StoredObject(
                    flow_backend(flow, settings),
                    path,
                    etag,
                    stored_part_count(headers),
                    envelope.chunk_size,
                )
                _, size = await stored.shape(int(headers.get("content-length", "")))
                return StoredShape(size, envelope.chunk_size, True, etag)
            return None
        return StoredShape(int(headers.get("content-length", "")), settings.chunk_size, False, etag)
    except (CryptoError, S3Error, ValueError):
        return None


async def _read_plaintext(
    flow: http.HTTPFlow, settings: Settings, first: int, last: int, etag: str | None
) -> tuple[http.Headers, bytes]:
    """Bytes ``first..last`` of the unencrypted object a GET names, all of them."""
    backend = flow_backend(flow, settings)
    headers, body = await get_stored_range(backend, object_path(flow), first, last, etag)
    if len(body) != last - first + 1:
        raise S3Error("InternalError", OBJECT_CHANGED)
    return headers, body

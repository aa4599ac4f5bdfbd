"""Decrypts multipart objects (envelope ``p=1``: one frame per part) on download.

Sizes follow from the stored length and the part count, because the gateway
only completes uploads whose parts but the last hold whole chunks. The part
count comes from the ETag (``"...-N"``) or ``x-amz-mp-parts-count``; backends
that report neither (rclone) cost two 48-byte reads of frame headers, which
only works when every part but the last has one size. Ranged reads need
that layout (part size from the first frame's header) and the header of the
first frame they touch: one or two 48-byte side requests.
``GetObject?partNumber=N`` answers that were honoured by the backend are
decrypted as that part; backends that ignore ``partNumber`` send the whole
object, which is then served whole, as they would.
"""

from __future__ import annotations

import logging
from functools import partial
from urllib.parse import quote

from mitmproxy import http

from addons.backend import get_stored_range
from addons.bodycrypto import (
    ENCRYPTION_HEADER,
    ENVELOPE_HEADER,
    ByteWindow,
    abort_stream,
    answer_failure,
    answer_head_range,
    backend_window,
    check_covers,
    drop_checksum_headers,
    if_range_refused,
    resolve_or_answer_416,
    serve_planned_range,
)
from addons.config import Config
from addons.failsafe import fail_closed_response
from addons.flowstate import FlowState, state_of
from addons.route import flow_backend
from addons.s3.errors import S3Error
from addons.s3.multipartxml import MAX_PARTS, MIN_PART_SIZE, multipart_part_count, part_number
from addons.s3.ops import Action
from addons.settings import Backend
from addons.transforms import DownloadTransform
from crypto import (
    CryptoError,
    Envelope,
    FormatError,
    FrameHeader,
    IntegrityError,
    ObjectDecryptor,
    PartLayout,
    PartsRangeDecryptor,
    RangeRequest,
    plaintext_length,
    plan_parts_range,
    uniform_part_layout,
)
from crypto.format import HEADER_LENGTH
from crypto.sizes import aligned_frames_plaintext_length, aligned_frames_plaintext_offset

log = logging.getLogger("s3gw")

_NOT_UNIFORM = (
    "The parts of this multipart object are not all of one size, which ranged reads"
    " through the encryption gateway need; read it whole or part by part (partNumber)."
)
_NO_PART_COUNT = (
    "The storage backend does not report this multipart object's part count and its"
    " parts are not all of one size: the gateway cannot compute its plaintext size."
)


class MultipartReads:
    def __init__(self, config: Config) -> None:
        self._config = config

    @fail_closed_response
    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        response = flow.response
        if state is None or response is None or state.error is not None:
            return
        if state.operation.action not in (Action.DECRYPT_DOWNLOAD, Action.HEAD_OBJECT):
            return
        value = response.headers.get(ENVELOPE_HEADER)
        if response.status_code not in (200, 206) or value is None:
            return
        try:
            envelope = Envelope.decode(value)
        except CryptoError:
            return  # ObjectCrypto has answered with the error
        if not envelope.multipart:
            return
        try:
            await self._serve(flow, state, envelope)
        except (S3Error, CryptoError) as error:
            answer_failure(flow, state, error)

    async def _serve(self, flow: http.HTTPFlow, state: FlowState, envelope: Envelope) -> None:
        response = flow.response
        assert response is not None
        backend = flow_backend(flow, self._config.current())
        state.encryption = "s3g1"
        del response.headers[ENVELOPE_HEADER]
        drop_checksum_headers(response.headers)
        response.headers[ENCRYPTION_HEADER] = "s3g1"
        window = backend_window(response)
        if window is None:
            raise S3Error("InternalError", "The storage backend sent no usable length.")
        head = state.operation.action is Action.HEAD_OBJECT
        requested_part = state.operation.param("partNumber")
        part_answer = requested_part is not None and _is_part_answer(response, window, head=head)
        stored = StoredObject(
            backend,
            object_path(flow),
            # A part's answer may carry the part's ETag, not the object's.
            None if part_answer else response.headers.get("etag"),
            stored_part_count(response.headers),
            envelope.chunk_size,
        )
        if part_answer:
            await self._serve_part(flow, envelope, stored, window, part_number(requested_part))
            return
        if head:
            _, size = await stored.shape(window.total)
            response.headers["content-length"] = str(size)
            answer_head_range(flow, state, size)
            return
        requested: RangeRequest | None = state.range_request
        if_range_failed = if_range_refused(flow, requested)
        if requested is None or if_range_failed:
            await self._serve_whole(flow, envelope, stored, window)
        else:
            await self._serve_range(flow, state, envelope, stored, window, requested)

    async def _serve_whole(
        self, flow: http.HTTPFlow, envelope: Envelope, stored: StoredObject, window: ByteWindow
    ) -> None:
        response = flow.response
        assert response is not None
        if not window.whole:
            raise S3Error("InternalError", "The storage backend sent a partial object.")
        parts, size = await stored.shape(window.total)
        with envelope.open(self._config.current().keyring) as data_key:
            decryptor = ObjectDecryptor(
                data_key, multipart=True, parts=range(1, parts + 1), expected_length=size
            )
        response.headers["content-length"] = str(size)
        if response.status_code == 206:
            response.headers["content-range"] = f"bytes 0-{max(size - 1, 0)}/{size}"
        response.stream = DownloadTransform(
            decryptor, window=None, on_error=partial(abort_stream, flow)
        )

    async def _serve_range(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        envelope: Envelope,
        stored: StoredObject,
        window: ByteWindow,
        requested: RangeRequest,
    ) -> None:
        response = flow.response
        assert response is not None
        layout, first_header = await stored.layout(window.total, for_ranges=True)
        span = resolve_or_answer_416(flow, state, requested, layout.object_size)
        if span is None:
            return
        first, last = span
        plan = plan_parts_range(first, last, layout)
        check_covers(window, plan.ciphertext_first, plan.ciphertext_last)
        # Check the layout where the range starts and ends before streaming anything.
        if plan.first_part:
            first_header = await stored.part_header(layout, plan.first_part)
        if plan.last_part not in (0, plan.first_part):
            await stored.part_header(layout, plan.last_part)
        with envelope.open(self._config.current().keyring) as data_key:
            decryptor = PartsRangeDecryptor(data_key, first_header, plan)
        serve_planned_range(flow, decryptor, plan, window)

    async def _serve_part(
        self,
        flow: http.HTTPFlow,
        envelope: Envelope,
        stored: StoredObject,
        window: ByteWindow,
        number: int,
    ) -> None:
        """The backend answered ``?partNumber=N`` with that part's frame."""
        response = flow.response
        assert response is not None
        head = flow.request.method == "HEAD"
        length = window.last - window.first + 1
        if head and "content-range" not in response.headers:
            length = int(response.headers.get("content-length", "0"))
        part_size = plaintext_length(length, envelope.chunk_size)
        response.headers["content-length"] = str(part_size)
        if "content-range" in response.headers:
            _, size = await stored.shape(window.total)
            first = aligned_frames_plaintext_offset(window.first, number - 1, envelope.chunk_size)
            last = max(first + part_size - 1, first)
            response.headers["content-range"] = f"bytes {first}-{last}/{size}"
        if head:
            return
        with envelope.open(self._config.current().keyring) as data_key:
            decryptor = ObjectDecryptor(
                data_key, multipart=True, parts=range(number, number + 1), expected_length=part_size
            )
        response.stream = DownloadTransform(
            decryptor, window=None, on_error=partial(abort_stream, flow)
        )


class StoredObject:
    """A multipart object on the backend, as far as its sizes are concerned."""

    def __init__(
        self,
        backend: Backend,
        path: str,
        etag: str | None,
        part_count: int | None,
        chunk_size: int,
    ) -> None:
        self._backend = backend
        self._path = path
        self._etag = etag
        self.part_count = part_count
        self.chunk_size = chunk_size

    async def shape(self, total: int) -> tuple[int, int]:
        """(part count, plaintext size) of the object, stored as ``total`` bytes."""
        if self.part_count is not None:
            size = aligned_frames_plaintext_length(total, self.part_count, self.chunk_size)
            return self.part_count, size
        layout, _ = await self.layout(total, for_ranges=False)
        return layout.part_count, layout.object_size

    async def layout(self, total: int, *, for_ranges: bool) -> tuple[PartLayout, FrameHeader]:
        """The layout of parts of one size (but the last), and the first frame's header.

        The part size comes from the first frame's header. Without a known
        part count, the header where the last frame must start confirms it.
        """
        first = await self.frame_header(0)
        if first.part_number != 1:
            raise IntegrityError("the object does not start with part 1")
        try:
            layout = uniform_part_layout(
                total, first.plaintext_length, self.chunk_size, self.part_count
            )
        except FormatError:
            raise _not_uniform(for_ranges) from None
        if self.part_count is None and layout.part_count > 1:
            await self.part_header(layout, layout.part_count - 1, for_ranges=for_ranges)
        return layout, first

    async def part_header(
        self, layout: PartLayout, index: int, *, for_ranges: bool = True
    ) -> FrameHeader:
        """The header of the part at ``index``, which must be where ``layout`` puts it."""
        try:
            header = await self.frame_header(layout.frame_offset(index))
        except FormatError:
            raise _not_uniform(for_ranges) from None
        if (header.part_number, header.plaintext_length) != (
            index + 1,
            layout.part_plaintext_size(index),
        ):
            raise _not_uniform(for_ranges)
        return header

    async def frame_header(self, offset: int) -> FrameHeader:
        """The 48-byte frame header at ``offset`` (a side request for just those bytes)."""
        _, body = await get_stored_range(
            self._backend, self._path, offset, offset + HEADER_LENGTH - 1, self._etag
        )
        if len(body) < HEADER_LENGTH:
            raise FormatError("the object ends inside a frame header")
        return FrameHeader.parse(body[:HEADER_LENGTH])


def object_path(flow: http.HTTPFlow, answered_version: str | None = None) -> str:
    """The stored object a GET or HEAD names, for side requests (version included).

    ``answered_version`` (a backend answer's ``x-amz-version-id``) pins a request
    without a ``versionId`` to the version that answered it."""
    path = flow.request.path.split("?", 1)[0]
    version = flow.request.query.get("versionId")
    if version is None and answered_version not in (None, "", "null"):
        version = answered_version
    if version is not None:
        path += "?versionId=" + quote(version, safe="")
    return path


def _not_uniform(for_ranges: bool) -> S3Error:
    return S3Error("NotImplemented", _NOT_UNIFORM if for_ranges else _NO_PART_COUNT)


def part_headers_before(position: int) -> int:
    """The most frame-header bytes a multipart object written through the gateway
    has before plaintext byte ``position`` beyond a single-frame object's one."""
    return HEADER_LENGTH * min(MAX_PARTS - 1, position // MIN_PART_SIZE)


def stored_part_count(headers: http.Headers) -> int | None:
    """A multipart object's part count, from its ETag or ``x-amz-mp-parts-count``."""
    count = multipart_part_count(headers.get("etag"))
    if count is None:
        value = headers.get("x-amz-mp-parts-count", "")
        count = int(value) if value.isdigit() and 0 < int(value) <= MAX_PARTS else None
    return count


def _is_part_answer(response: http.Response, window: ByteWindow, *, head: bool) -> bool:
    """Whether the backend answered ``?partNumber=N`` with that part (S3 does) rather
    than with the whole object (backends that ignore the parameter)."""
    if "content-range" in response.headers:
        return not window.whole
    return head and "x-amz-mp-parts-count" in response.headers

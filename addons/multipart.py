"""Encrypted multipart uploads, with no state shared between gateway replicas.

- CreateMultipartUpload: a fresh data key is sealed into the object's
  envelope (``p=1``) and, once the backend has answered, into the upload id
  the client gets instead of the backend's (``addons/s3/uploadid.py``).
- UploadPart: the upload id gives the data key back on any replica; the body
  is verified and encrypted as one frame carrying the part number, exactly
  like a PutObject body.
- CompleteMultipartUpload: the parts list is checked against the backend's
  own (ListParts) so that sizes stay computable from the stored lengths:
  part numbers 1..n, every part but the last at least 5 MiB and a whole
  number of chunks.
- AbortMultipartUpload and ListParts: upload ids swapped, part sizes shown in
  plaintext. ListMultipartUploads passes through with the backend's ids.

In a ``passthrough`` bucket, uploads created there keep the backend's upload
id and store their parts as sent (still verified); an upload created while the
bucket was ``encrypt`` (a gateway token) stays encrypted to its end, and a
backend id is never accepted in an ``encrypt`` bucket (ADR 0007).

Reading multipart objects is :class:`addons.multipartreads.MultipartReads`.
See docs/adr/0005-stateless-multipart-upload-ids.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from mitmproxy import http

from addons.backend import get
from addons.bodycheck import upload_checks
from addons.bodycrypto import (
    add_envelope,
    drop_checksum_headers,
    encrypt_request_body,
    pass_request_body,
    reject_reserved_metadata,
)
from addons.config import Config
from addons.failsafe import fail_closed, fail_closed_response
from addons.flowstate import (
    FlowState,
    active_state,
    error_body_response,
    refuse,
    respond_error,
    state_of,
)
from addons.multipartreads import MultipartReads
from addons.route import flow_backend
from addons.s3.checksums import ALGORITHMS, CHECKSUM_HEADER_PREFIX, checksum_verifiers
from addons.s3.errors import BAD_GATEWAY, S3Error
from addons.s3.multipartxml import (
    MAX_COMPLETE_BODY,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    BackendDocumentError,
    CompletedPart,
    ListedPart,
    complete_request_xml,
    normalized_etag,
    parse_complete_request,
    parse_parts_page,
    part_number,
    rewrite_texts,
    upload_id_of,
)
from addons.s3.ops import Action
from addons.s3.uploadid import UploadToken, with_upload_id
from addons.settings import Backend, BucketPolicy, Settings
from crypto import CryptoError, DataKey, Envelope, FormatError, FrameEncryptor, plaintext_length

log = logging.getLogger("s3gw")

_PAGE_SIZE = 1000  # parts per backend ListParts page (S3's maximum)
_MAX_LISTING = 8 * 1024 * 1024
_FULL_OBJECT_CHECKSUMS = tuple(CHECKSUM_HEADER_PREFIX + name for name in ALGORITHMS)
# Verifying one would mean reading the whole object back through the gateway.
_NO_FULL_OBJECT_CHECKSUMS = (
    "Whole-object checksums of multipart uploads are not supported through the"
    " encryption gateway; the checksums of each part are verified."
)


@dataclass
class UploadRequest:
    """What a multipart request's later hooks need to know about its upload."""

    token: str  # the upload id the client uses; "" until CreateMultipartUpload is answered
    chunk_size: int
    data_key: DataKey | None = None  # CreateMultipartUpload: sealed into the token
    backend_upload_id: str = ""
    plain: bool = False  # an upload of a passthrough bucket: the backend's id, parts as sent


class MultipartUploads:
    def __init__(self, config: Config) -> None:
        self._config = config

    # -- requests -----------------------------------------------------------

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or state.operation.action not in (Action.MULTIPART, Action.ENCRYPT_PART):
            return
        settings = self._config.current()
        name = state.operation.name
        try:
            if name == "CreateMultipartUpload":
                self._begin_create(flow, state, settings)
                return
            number = part_number(state.operation.param("partNumber")) if name == "UploadPart" else 0
            upload = self._open_upload(flow, state, settings)
            if name == "UploadPart" and upload.plain:
                self._begin_plain_part(flow, state)
            elif name == "UploadPart":
                self._begin_part(flow, state, upload, number)
            elif name == "CompleteMultipartUpload":
                self._begin_complete(flow)
        except S3Error as error:
            refuse(flow, error)

    def _begin_create(self, flow: http.HTTPFlow, state: FlowState, settings: Settings) -> None:
        headers = flow.request.headers
        reject_reserved_metadata(headers)
        if headers.get("x-amz-checksum-type", "").strip().upper() == "FULL_OBJECT":
            raise S3Error("NotImplemented", _NO_FULL_OBJECT_CHECKSUMS)
        # Part checksums are verified over the plaintext by the gateway; the backend,
        # which only sees ciphertext, must not expect any.
        headers.pop("x-amz-checksum-algorithm", None)
        headers.pop("x-amz-checksum-type", None)
        if state.policy is BucketPolicy.PASSTHROUGH:
            state.encryption = "none"  # no envelope, no token: the backend's upload id
            return
        data_key = DataKey.generate(settings.algorithm, settings.chunk_size)
        try:
            add_envelope(
                headers,
                Envelope.seal(data_key, settings.keyring, multipart=True),
                settings.provider,
            )
        except S3Error:
            data_key.close()
            raise
        state.multipart = UploadRequest("", settings.chunk_size, data_key)
        state.encryption = "s3g1"

    def _open_upload(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings
    ) -> UploadRequest:
        """Check the client's upload id and send the backend's in its place."""
        operation = state.operation
        text = operation.param("uploadId") or ""
        try:
            token = UploadToken.decode(text)
        except FormatError:
            if state.policy is BucketPolicy.PASSTHROUGH and text:
                upload = UploadRequest(text, settings.chunk_size, None, text, plain=True)
                state.multipart = upload
                return upload
            if operation.name == "AbortMultipartUpload" and text:
                # Ids from ListMultipartUploads are the backend's; aborting needs no key.
                return UploadRequest(text, settings.chunk_size, backend_upload_id=text)
            log.info("s3gw: %s with an upload id the gateway did not issue", operation.name)
            raise S3Error("NoSuchUpload", extra={"UploadId": text}) from None
        try:
            data_key = token.open(settings.keyring, bucket=operation.bucket, key=operation.key)
        except CryptoError as error:
            log.info("s3gw: %s with an upload id that does not open: %s", operation.name, error)
            raise S3Error("NoSuchUpload", extra={"UploadId": text}) from None
        kept: DataKey | None = data_key
        if operation.name != "UploadPart":
            data_key.close()  # opening it was the authentication
            kept = None
        flow.request.path = with_upload_id(flow.request.path, token.backend_upload_id)
        upload = UploadRequest(text, token.chunk_size, kept, token.backend_upload_id)
        state.multipart = upload
        return upload

    def _begin_part(
        self, flow: http.HTTPFlow, state: FlowState, upload: UploadRequest, number: int
    ) -> None:
        assert upload.data_key is not None
        with upload.data_key as data_key:
            checks = upload_checks(flow.request.headers, state.auth)
            if checks.plaintext_length > MAX_PART_SIZE:
                raise S3Error("EntityTooLarge")
            # A fresh salt per frame: a part uploaded again never reuses a frame key.
            encryptor = FrameEncryptor(data_key, checks.plaintext_length, part_number=number)
        upload.data_key = None
        encrypt_request_body(flow, state, encryptor, checks)

    def _begin_plain_part(self, flow: http.HTTPFlow, state: FlowState) -> None:
        checks = upload_checks(flow.request.headers, state.auth)
        if checks.plaintext_length > MAX_PART_SIZE:
            raise S3Error("EntityTooLarge")
        pass_request_body(flow, state, checks)

    def _begin_complete(self, flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        if any(name in headers for name in _FULL_OBJECT_CHECKSUMS):
            raise S3Error("NotImplemented", _NO_FULL_OBJECT_CHECKSUMS)
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise S3Error("MissingContentLength")
        if int(length) > MAX_COMPLETE_BODY:
            raise S3Error("MaxMessageLengthExceeded")

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None or state.operation.name != "CompleteMultipartUpload":
            return
        upload: UploadRequest | None = state.multipart
        if upload is None:
            return
        try:
            await self._check_complete(flow, upload)
        except S3Error as error:
            respond_error(flow, error)

    async def _check_complete(self, flow: http.HTTPFlow, upload: UploadRequest) -> None:
        request = flow.request
        body = request.raw_content or b""
        for verifier in checksum_verifiers(request.headers.items(multi=True)):
            verifier.update(body)  # only Content-MD5 is left: others were refused
            verifier.verify()
        parts = parse_complete_request(body)
        if upload.plain:
            # The backend checks the parts itself; their checksums were verified here and
            # not stored, so only part numbers and ETags are forwarded.
            for name in ("content-md5", "content-encoding"):
                request.headers.pop(name, None)
            request.content = complete_request_xml(parts)
            return
        path = request.path.split("?", 1)[0]
        backend = flow_backend(flow, self._config.current())
        listed = await self._listed_parts(backend, path, upload.backend_upload_id)
        size = _checked_plaintext_size(parts, listed, upload.chunk_size)
        expected = request.headers.get("x-amz-mp-object-size")
        if expected is not None and expected.strip() != str(size):
            raise S3Error(
                "InvalidRequest",
                f"The provided x-amz-mp-object-size {expected.strip()} does not match the"
                f" size of the parts ({size}).",
            )
        for name in ("x-amz-mp-object-size", "content-md5", "content-encoding"):
            request.headers.pop(name, None)
        request.content = complete_request_xml(parts)

    async def _listed_parts(
        self, backend: Backend, path: str, backend_upload_id: str
    ) -> dict[int, ListedPart]:
        """Every part the backend holds for the upload (ListParts, page by page)."""
        listed: dict[int, ListedPart] = {}
        marker = 0
        for _ in range(MAX_PARTS // _PAGE_SIZE + 1):
            query = f"uploadId={quote(backend_upload_id, safe='-_.~')}&max-parts={_PAGE_SIZE}"
            if marker:
                query += f"&part-number-marker={marker}"
            status, _, document = await get(backend, f"{path}?{query}", max_body=_MAX_LISTING)
            if status == 404:
                raise S3Error("NoSuchUpload")
            if status != 200:
                log.error("s3gw: backend ListParts for %s answered %d", path, status)
                raise S3Error(BAD_GATEWAY)
            try:
                page = parse_parts_page(document)
            except BackendDocumentError as error:
                log.error("s3gw: unusable backend ListParts for %s: %s", path, error)
                raise S3Error(BAD_GATEWAY) from None
            listed.update((part.number, part) for part in page.parts)
            if page.next_marker is None:
                return listed
            marker = page.next_marker
        log.error("s3gw: backend ListParts for %s does not end", path)
        raise S3Error(BAD_GATEWAY)

    # -- responses ----------------------------------------------------------

    @fail_closed_response
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = _answered(flow)
        if state is None:
            return
        response = flow.response
        assert response is not None
        # The backend's checksums are of ciphertext, or of parts the client never sent.
        drop_checksum_headers(response.headers)
        if state.operation.name in ("CreateMultipartUpload", "ListParts"):
            response.stream = False  # the upload ids in the document are rewritten

    @fail_closed_response
    def response(self, flow: http.HTTPFlow) -> None:
        upload_state = state_of(flow)
        upload: UploadRequest | None = upload_state.multipart if upload_state else None
        try:
            self._rewrite_answer(flow, upload)
        finally:
            if upload is not None and upload.data_key is not None:
                upload.data_key.close()

    def _rewrite_answer(self, flow: http.HTTPFlow, upload: UploadRequest | None) -> None:
        state = _answered(flow)
        if state is None or state.operation.name not in ("CreateMultipartUpload", "ListParts"):
            return
        response = flow.response
        if response is None or upload is None or upload.plain:
            return
        try:
            document = response.get_content() or b""
            if state.operation.name == "CreateMultipartUpload":
                response.content = self._answer_create(state, upload, document)
            else:
                response.content = rewrite_texts(
                    document,
                    {
                        ("UploadId",): lambda _: upload.token,
                        ("Part", "Size"): lambda size: str(
                            plaintext_length(int(size), upload.chunk_size)
                        ),
                    },
                )
        except (BackendDocumentError, CryptoError, ValueError) as error:
            log.error(
                "s3gw: cannot rewrite %s for %s: %s",
                state.operation.name,
                state.operation.resource,
                error,
            )
            response.content = error_body_response(flow, S3Error(BAD_GATEWAY))

    def _answer_create(self, state: FlowState, upload: UploadRequest, document: bytes) -> bytes:
        assert upload.data_key is not None
        backend_upload_id = upload_id_of(document)
        token = UploadToken.seal(
            upload.data_key,
            self._config.current().keyring,
            bucket=state.operation.bucket,
            key=state.operation.key,
            backend_upload_id=backend_upload_id,
        ).encode()
        return rewrite_texts(document, {("UploadId",): lambda _: token})


def _answered(flow: http.HTTPFlow) -> FlowState | None:
    """The state of a multipart request the backend answered with success."""
    state = state_of(flow)
    response = flow.response
    if state is None or state.error is not None or response is None:
        return None
    if state.operation.action not in (Action.MULTIPART, Action.ENCRYPT_PART):
        return None
    return state if response.status_code == 200 else None


def _checked_plaintext_size(
    parts: list[CompletedPart], listed: dict[int, ListedPart], chunk_size: int
) -> int:
    """The object's plaintext size, once the parts are known to make a readable object.

    Part numbers must run 1..n (so a dropped middle part is detected on read),
    and every part but the last must hold at least 5 MiB of plaintext (as S3
    counts it) and a whole number of chunks (so sizes and ranges follow from
    the stored length and the part count).
    """
    for index, part in enumerate(parts):
        stored = listed.get(part.number)
        if stored is None or normalized_etag(part.etag).lower() != stored.etag.lower():
            raise S3Error("InvalidPart")
        if part.number != index + 1:
            raise S3Error(
                "InvalidPart",
                "Through the encryption gateway, part numbers must run from 1 without gaps;"
                f" part {index + 1} is missing from the list.",
            )
    size = 0
    for index, part in enumerate(parts):
        stored = listed[part.number]
        try:
            part_size = plaintext_length(stored.size, chunk_size)
        except FormatError:
            raise S3Error(
                "InvalidPart",
                f"Part {part.number} was not uploaded through the encryption gateway.",
            ) from None
        if index < len(parts) - 1:
            if part_size < MIN_PART_SIZE:
                raise S3Error(
                    "EntityTooSmall",
                    extra={
                        "ProposedSize": str(part_size),
                        "MinSizeAllowed": str(MIN_PART_SIZE),
                        "PartNumber": str(part.number),
                        "ETag": stored.etag,
                    },
                )
            if part_size % chunk_size:
                raise S3Error(
                    "InvalidPart",
                    f"Part {part.number} holds {part_size} bytes. Through the encryption gateway,"
                    f" every part but the last must hold a multiple of {chunk_size} bytes"
                    " (SDK part sizes are whole MiB).",
                )
        elif index and part_size == 0:
            raise S3Error("InvalidPart", "The last part of a multipart upload must not be empty.")
        size += part_size
    return size


class Multipart:
    """Multipart uploads and reads of multipart objects, as one entry of the chain."""

    def __init__(self, config: Config) -> None:
        self.addons = [MultipartUploads(config), MultipartReads(config)]

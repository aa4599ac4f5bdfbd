"""Encrypts object bodies on upload and decrypts them on download.

PutObject: the plaintext body (plain or ``aws-chunked``) is verified against
the digests the client sent and encrypted as one S3G1 frame; the envelope goes
into one ``x-amz-meta-*`` header and ``Content-Length`` becomes the ciphertext
length. GetObject/HeadObject: the envelope is opened, the body decrypted, and
sizes, ranges and headers are translated back to the plaintext view.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from urllib.parse import quote, unquote

from mitmproxy import http

from addons.backend import head_object
from addons.bodycheck import upload_checks
from addons.config import Config
from addons.flowstate import (
    FlowState,
    abort_connections,
    active_state,
    error_body_response,
    refuse,
    respond_error,
    state_of,
)
from addons.s3.errors import S3Error
from addons.s3.ops import Action
from addons.settings import Settings
from addons.transforms import (
    DownloadTransform,
    InputWindow,
    PlainWindowTransform,
    ReplaceBodyTransform,
    UploadTransform,
)
from crypto import (
    CryptoError,
    DataKey,
    Envelope,
    FrameEncryptor,
    LengthMismatch,
    ObjectDecryptor,
    RangeDecryptor,
    RangeNotSatisfiable,
    RangeRequest,
    UnknownKeyId,
    ciphertext_length,
    metadata_budget,
    parse_range,
    plan_range,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH

log = logging.getLogger("s3gw")

ENVELOPE_HEADER = "x-amz-meta-s3gw"
ENCRYPTION_HEADER = "x-s3gw-encryption"
MAX_OBJECT_SIZE = 5 * 1024**4  # S3's single-object limit
# Uploads up to this size are read whole before they are forwarded (see _begin_upload).
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
_CHECKSUM_HEADER = re.compile(r"x-amz-checksum-.*|content-md5", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _drop_checksum_headers(headers: http.Headers) -> None:
    for name in list(headers.keys()):
        if _CHECKSUM_HEADER.fullmatch(name):
            del headers[name]


class ObjectCrypto:
    def __init__(self, config: Config) -> None:
        self._config = config

    # -- requests -----------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None:
            return
        action = state.operation.action
        try:
            if action is Action.REFUSE:
                raise S3Error(
                    "NotImplemented",
                    f"{state.operation.name} is not supported through the encryption gateway.",
                )
            if action is Action.ENCRYPT_UPLOAD:
                self._begin_upload(flow, state, self._config.current())
            elif action is Action.COPY:
                await self._begin_copy(flow, self._config.current())
            elif action is Action.DECRYPT_DOWNLOAD:
                await self._begin_download(flow, state, self._config.current())
        except S3Error as error:
            refuse(flow, error)

    def _begin_upload(self, flow: http.HTTPFlow, state: FlowState, settings: Settings) -> None:
        request = flow.request
        headers = request.headers
        if ENVELOPE_HEADER in headers:
            raise S3Error("InvalidArgument", f"The metadata key {ENVELOPE_HEADER} is reserved.")
        checks = upload_checks(headers, state.auth)
        length = checks.plaintext_length
        if length > MAX_OBJECT_SIZE:
            raise S3Error("EntityTooLarge")
        data_key = DataKey.generate(settings.algorithm, settings.chunk_size)
        with data_key:
            encryptor = FrameEncryptor(data_key, length)
            envelope = Envelope.seal(data_key, settings.keyring, frame=encryptor.header)
        headers[ENVELOPE_HEADER] = envelope.encode()
        budget = metadata_budget(settings.provider, headers.items(multi=True))
        if budget.exceeded:
            encryptor.close()
            raise S3Error(
                "MetadataTooLarge",
                "Your metadata headers exceed the maximum allowed metadata size"
                f" ({budget.used} of {budget.limit} bytes, including the gateway's envelope).",
            )
        if budget.near_limit:
            log.warning("s3gw: object metadata uses %d of %d bytes", budget.used, budget.limit)
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
        _drop_checksum_headers(headers)
        headers["content-length"] = str(encryptor.ciphertext_length)
        state.encryption = "s3g1"
        if length <= SMALL_UPLOAD:
            # Small bodies are checked whole before anything is forwarded, so a bad
            # digest gets its S3 error answer instead of a closed connection.
            state.upload = UploadTransform(
                encryptor,
                decoder=checks.decoder,
                verifiers=checks.verifiers,
                finish_hooks=checks.finish_hooks,
                on_error=partial(_record_upload_error, state),
            )
            return
        request.stream = UploadTransform(
            encryptor,
            decoder=checks.decoder,
            verifiers=checks.verifiers,
            finish_hooks=checks.finish_hooks,
            on_error=partial(self._stream_failed, flow),
        )
        state.streamed_request = True

    async def _begin_copy(self, flow: http.HTTPFlow, settings: Settings) -> None:
        """CopyObject stays server-side: the data key travels in the envelope.

        With ``COPY`` the backend copies the envelope along with the metadata.
        With ``REPLACE`` the client's new metadata would drop it, so the
        source's envelope is read (HEAD) and added, re-wrapped under the
        active KEK; the copy is made conditional on the source ETag seen, so a
        concurrent overwrite cannot pair other bytes with this envelope.
        """
        headers = flow.request.headers
        if ENVELOPE_HEADER in headers:
            raise S3Error("InvalidArgument", f"The metadata key {ENVELOPE_HEADER} is reserved.")
        if headers.get("x-amz-metadata-directive", "COPY").upper() != "REPLACE":
            return
        source = copy_source_path(headers.get("x-amz-copy-source", ""))
        status, source_headers = await head_object(settings.backend, source)
        if status != 200:
            return  # the backend answers the copy with the right error
        etag = source_headers.get("etag", "")
        wanted = headers.get("x-amz-copy-source-if-match")
        if wanted is not None and wanted.strip() != etag:
            raise S3Error("PreconditionFailed", extra={"Condition": "x-amz-copy-source-If-Match"})
        headers["x-amz-copy-source-if-match"] = etag
        value = source_headers.get(ENVELOPE_HEADER)
        if value is None:
            return  # an unencrypted source stays as it is stored
        try:
            envelope = Envelope.decode(value).rewrap(settings.keyring)
        except CryptoError as error:
            raise _crypto_error(error) from None
        headers[ENVELOPE_HEADER] = envelope.encode()
        budget = metadata_budget(settings.provider, headers.items(multi=True))
        if budget.exceeded:
            raise S3Error("MetadataTooLarge")

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
        requested = parse_range(flow.request.headers.get("range"))
        state.range_request = requested
        if requested is None:
            # S3 ignores what it cannot serve as one range; the backend must not see it
            # (a multi-range answer over ciphertext would be garbage).
            flow.request.headers.pop("range", None)
            return
        chunk_size = settings.chunk_size
        if requested.start is None:
            # A suffix range needs the object's size: an enlarged suffix could pass the
            # end of the stored object, which some backends refuse instead of clamping.
            stored = await _stored_size(flow, settings)
            if stored is not None:
                size, chunk_size = stored
                try:
                    first, last = requested.resolve(size)
                except RangeNotSatisfiable:
                    pass
                else:
                    requested = RangeRequest(first, last)
        flow.request.headers["range"] = covering_range(requested, chunk_size)

    # -- responses ----------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        response = flow.response
        if state is None or response is None:
            return
        action = state.operation.action
        if action not in (Action.DECRYPT_DOWNLOAD, Action.HEAD_OBJECT):
            return
        if response.status_code not in (200, 206):
            return
        settings = self._config.current()
        try:
            value = response.headers.get(ENVELOPE_HEADER)
            if value is None:
                self._serve_plaintext(flow, state, settings)
            else:
                self._serve_encrypted(flow, state, settings, value)
        except S3Error as error:
            response.stream = ReplaceBodyTransform(error_body_response(flow, error))
        except CryptoError as error:
            log.error("s3gw: cannot decrypt %s: %s", state.operation.resource, error)
            response.stream = ReplaceBodyTransform(error_body_response(flow, _crypto_error(error)))

    def _serve_plaintext(self, flow: http.HTTPFlow, state: FlowState, settings: Settings) -> None:
        response = flow.response
        assert response is not None
        if not settings.allow_plaintext_reads:
            raise S3Error(
                "AccessDenied", "The object is not encrypted and plaintext reads are off."
            )
        response.headers[ENCRYPTION_HEADER] = "none"
        state.encryption = "none"
        if state.operation.action is Action.HEAD_OBJECT:
            return
        requested = state.range_request
        window = _backend_window(response)
        if requested is None or window is None:
            response.stream = True
            return
        first, last = requested.resolve(window.total)
        _check_covers(window, first, last)
        _drop_checksum_headers(response.headers)
        response.status_code = 206
        response.headers["content-range"] = f"bytes {first}-{last}/{window.total}"
        response.headers["content-length"] = str(last - first + 1)
        response.stream = PlainWindowTransform(InputWindow(first - window.first, last - first + 1))

    def _serve_encrypted(
        self, flow: http.HTTPFlow, state: FlowState, settings: Settings, value: str
    ) -> None:
        response = flow.response
        assert response is not None
        envelope = Envelope.decode(value)
        if envelope.frame is None:
            raise S3Error("NotImplemented", "Multipart-encrypted objects are not supported yet.")
        size = envelope.frame.plaintext_length
        state.encryption = "s3g1"
        del response.headers[ENVELOPE_HEADER]
        _drop_checksum_headers(response.headers)
        response.headers[ENCRYPTION_HEADER] = "s3g1"
        if state.operation.action is Action.HEAD_OBJECT:
            response.headers["content-length"] = str(size)
            return
        window = _backend_window(response)
        if window is None:
            raise S3Error("InternalError", "The storage backend sent no usable length.")
        if window.total != ciphertext_length(size, envelope.chunk_size):
            raise S3Error(
                "InternalError", "The stored object's length does not match its envelope."
            )
        data_key = envelope.open(settings.keyring)
        on_error = partial(self._stream_failed, flow)
        requested: RangeRequest | None = state.range_request
        if_range_failed = (
            requested is not None
            and response.status_code == 200
            and "if-range" in flow.request.headers
        )
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
        try:
            first, last = requested.resolve(size)
        except RangeNotSatisfiable:
            data_key.close()
            error = S3Error(
                "InvalidRange",
                extra={
                    "RangeRequested": flow.request.headers.get("range", ""),
                    "ActualObjectSize": str(size),
                },
            )
            body = error_body_response(flow, error)
            response.headers["content-range"] = f"bytes */{size}"
            response.stream = ReplaceBodyTransform(body)
            return
        plan = plan_range(first, last, size, envelope.chunk_size)
        _check_covers(window, plan.ciphertext_first, plan.ciphertext_last)
        decryptor_range = RangeDecryptor(data_key, envelope.frame, plan)
        data_key.close()
        response.status_code = 206
        response.headers["content-range"] = plan.content_range
        response.headers["content-length"] = str(plan.length)
        response.stream = DownloadTransform(
            decryptor_range,
            window=InputWindow(plan.ciphertext_first - window.first, plan.ciphertext_length),
            on_error=on_error,
        )

    def _stream_failed(self, flow: http.HTTPFlow, error: Exception) -> None:
        state = state_of(flow)
        resource = state.operation.resource if state else flow.request.path
        log.error("s3gw: aborting %s %s: %s", flow.request.method, resource, error)
        if state is not None and isinstance(error, S3Error):
            state.error = error
        abort_connections(flow)


def _record_upload_error(state: FlowState, error: Exception) -> None:
    if isinstance(error, S3Error):
        state.upload_error = error
    elif isinstance(error, LengthMismatch):
        state.upload_error = S3Error("IncompleteBody")
    else:
        log.error("s3gw: upload of %s failed: %s", state.operation.resource, error)
        state.upload_error = S3Error("InternalError")


class _Window:
    def __init__(self, first: int, last: int, total: int) -> None:
        self.first, self.last, self.total = first, last, total


def _backend_window(response: http.Response) -> _Window | None:
    """Which bytes of the stored object the backend's body holds."""
    content_range = response.headers.get("content-range")
    # Trust Content-Range even on a 200: rclone answers ranged reads that way.
    if content_range:
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None:
            return None
        return _Window(int(match[1]), int(match[2]), int(match[3]))
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    return _Window(0, int(length) - 1, int(length))


def _check_covers(window: _Window, first: int, last: int) -> None:
    if window.first > first or window.last < last:
        raise S3Error(
            "InternalError",
            "The ranged read does not cover the requested bytes"
            " (was the object written with another chunk size?).",
        )


def covering_range(requested: RangeRequest, chunk_size: int) -> str:
    """A backend range covering ``requested`` whether the object is encrypted or not.

    Encrypted objects need whole chunks; unencrypted (legacy) objects need the
    bytes as asked. Asking for the union serves both without a HEAD first.
    """
    stride = chunk_size + TAG_LENGTH
    if requested.start is None:
        assert requested.end is not None
        plain = requested.end + chunk_size - 1
        chunks = -(-plain // chunk_size)
        return f"bytes=-{plain + TAG_LENGTH * chunks}"
    start = min(requested.start, HEADER_LENGTH + (requested.start // chunk_size) * stride)
    if requested.end is None:
        return f"bytes={start}-"
    end = max(requested.end, HEADER_LENGTH + (requested.end // chunk_size + 1) * stride - 1)
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


async def _stored_size(flow: http.HTTPFlow, settings: Settings) -> tuple[int, int] | None:
    """(plaintext size, chunk size) of the object a GET names, from a backend HEAD."""
    path = flow.request.path.split("?", 1)[0]
    version = flow.request.query.get("versionId")
    if version is not None:
        path += "?versionId=" + quote(version, safe="")
    status, headers = await head_object(settings.backend, path)
    if status != 200:
        return None
    value = headers.get(ENVELOPE_HEADER)
    try:
        if value is not None:
            envelope = Envelope.decode(value)
            if envelope.frame is not None:
                return envelope.frame.plaintext_length, envelope.chunk_size
            return None
        return int(headers.get("content-length", "")), settings.chunk_size
    except (CryptoError, ValueError):
        return None


def _crypto_error(error: CryptoError) -> S3Error:
    if isinstance(error, UnknownKeyId):
        message = "The object's key-encryption key is not in the gateway's keyring."
    else:
        message = "The object could not be decrypted by the gateway."
    return S3Error("InternalError", message)

"""Stream transforms plugged into mitmproxy's ``flow.{request,response}.stream``.

mitmproxy calls a transform once per network read and once more with ``b""``
at the end of the message. These transforms never raise (an exception there
hangs the client) and never return an empty ``bytes`` piece (that would end an
HTTP/1 chunked body early); on failure they call ``on_error`` once, which
aborts both connections, and swallow everything after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from crypto import HEADER_LENGTH, FormatError, FrameHeader

log = logging.getLogger("s3gw")

OnError = Callable[[Exception], None]
# An upload's error, and whether the client's whole body had been read by then.
OnUploadError = Callable[[Exception, bool], None]


class BodyVerifier(Protocol):
    """Checks a digest of the plaintext body once it is complete."""

    def update(self, data: bytes) -> None: ...
    def verify(self) -> None: ...


class ChunkDecoder(Protocol):
    """Removes a transfer framing such as aws-chunked."""

    def feed(self, data: bytes) -> list[bytes]: ...
    def finish(self) -> None: ...


class Cipher(Protocol):
    def update(self, data: bytes) -> list[bytes]: ...
    def finalize(self) -> list[bytes]: ...
    def close(self) -> None: ...


class UploadTransform:
    """Plaintext request body -> (decode framing) -> verify digests -> encrypt.

    The last encrypted piece is held back until every digest of the plaintext
    has been verified: if one fails, the backend never receives the full
    Content-Length and so never stores the object.
    """

    def __init__(
        self,
        encryptor: Cipher,
        *,
        decoder: ChunkDecoder | None,
        verifiers: Sequence[BodyVerifier],
        finish_hooks: Sequence[Callable[[], None]] = (),
        on_error: OnUploadError,
    ) -> None:
        self._encryptor = encryptor
        self._decoder = decoder
        self._verifiers = verifiers
        self._finish_hooks = finish_hooks
        self._on_error = on_error
        self._held: bytes | None = None
        self._failed = False
        self.called = False

    def run_on_complete_body(self, body: bytes) -> bytes:
        """Transform a body mitmproxy did not stream (it was complete with the headers)."""
        head = self(body) if body else []
        return b"".join([*head, *self(b"")])

    def __call__(self, data: bytes) -> list[bytes]:
        self.called = True
        if self._failed:
            return []
        try:
            if data:
                pieces = self._decoder.feed(data) if self._decoder else [data]
                out: list[bytes] = []
                for piece in pieces:
                    for verifier in self._verifiers:
                        verifier.update(piece)
                    out += self._encryptor.update(piece)
                return _joined(self._hold_last(out))
            if self._decoder is not None:
                self._decoder.finish()
            for hook in self._finish_hooks:
                hook()
            for verifier in self._verifiers:
                verifier.verify()
            out = self._encryptor.finalize()
            if self._held is not None:
                out.insert(0, self._held)
                self._held = None
            return _joined(out)
        except Exception as error:  # raising here would hang the client
            self._failed = True
            self._encryptor.close()
            self._on_error(error, not data)
            return []

    def _hold_last(self, out: list[bytes]) -> list[bytes]:
        if not out:
            return out
        if self._held is not None:
            out.insert(0, self._held)
        self._held = out.pop()
        return out


class InputWindow:
    """Selects ``length`` bytes of a stream after skipping ``skip`` bytes."""

    def __init__(self, skip: int, length: int | None) -> None:
        self._skip = skip
        self._remaining = length

    def select(self, data: bytes) -> bytes:
        if self._skip:
            if self._skip >= len(data):
                self._skip -= len(data)
                return b""
            data = data[self._skip :]
            self._skip = 0
        if self._remaining is not None:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
        return data


class DownloadTransform:
    """Ciphertext response body -> (select window) -> decrypt (-> trim, for ranges)."""

    def __init__(self, decryptor: Cipher, *, window: InputWindow | None, on_error: OnError) -> None:
        self._decryptor = decryptor
        self._window = window
        self._on_error = on_error
        self._failed = False

    def __call__(self, data: bytes) -> list[bytes]:
        if self._failed:
            return []
        try:
            if data:
                if self._window is not None:
                    data = self._window.select(data)
                    if not data:
                        return []
                return _joined(self._decryptor.update(data))
            return _joined(self._decryptor.finalize())
        except Exception as error:  # raising here would hang the client
            self._failed = True
            self._decryptor.close()
            self._on_error(error)
            return []


class PlainWindowTransform:
    """Serves an unencrypted (legacy) object, or a byte window of it.

    When the bytes start at the object's beginning they must not be an S3G1
    frame: an encrypted object whose envelope is missing (metadata lost by a
    copy outside the gateway, or a backend pairing one version's headers with
    another's body during an overwrite) would otherwise reach the client as
    its data. The first frame header's worth of bytes is held back and
    checked; on a match ``on_ciphertext`` is called (it cuts the transfer).
    ``prefix``, bytes of the object just before the window, goes out first.
    """

    def __init__(
        self,
        window: InputWindow | None,
        *,
        from_start: bool,
        on_ciphertext: Callable[[], None],
        prefix: bytes = b"",
    ) -> None:
        self._window = window
        self._head: bytearray | None = bytearray() if from_start else None
        self._on_ciphertext = on_ciphertext
        self._failed = False
        self._prefix = prefix  # bytes served before the window's (read apart)

    def __call__(self, data: bytes) -> list[bytes]:
        if self._failed:
            return []
        if self._head is not None:
            self._head += data
            if data and len(self._head) < HEADER_LENGTH:
                return []  # never b"": on a chunked answer it would end the body
            head, self._head = bytes(self._head), None
            if _is_frame_header(head[:HEADER_LENGTH]):
                self._failed = True
                self._on_ciphertext()
                return []
            data = head
        if data and self._window is not None:
            data = self._window.select(data)
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        return [data] if data else []


def _is_frame_header(data: bytes) -> bool:
    try:
        FrameHeader.parse(data)
    except FormatError:
        return False
    return True


class ReplaceBodyTransform:
    """Discards the backend's body and emits ``body`` instead (gateway error answers)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __call__(self, data: bytes) -> list[bytes]:
        if data or not self._body:
            return []
        body, self._body = self._body, b""
        return [body]


def _joined(pieces: list[bytes]) -> list[bytes]:
    # mitmproxy makes one send event, and one socket write, per piece returned:
    # one copy of a read's worth of bytes costs less than three more of those.
    return [b"".join(pieces)] if len(pieces) > 1 else pieces

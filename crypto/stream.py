"""Streaming encryption and decryption with bounded memory.

All three classes take input in pieces of any size (network reads) and return
a list of output pieces, never an empty ``bytes`` (an empty piece would end an
HTTP/1 chunked body early). Call ``update`` for each piece and ``finalize`` once
at the end; every failure is a :class:`~crypto.errors.CryptoError`.

Memory per stream is one pooled staging buffer of one chunk, plus the output
chunk being handed to the caller.
"""

from __future__ import annotations

from crypto.envelope import DataKey
from crypto.errors import (
    CryptoError,
    FormatError,
    IntegrityError,
    LengthMismatch,
    TrailingDataError,
    TruncatedError,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH, FrameCipher, FrameHeader
from crypto.pool import BufferPool, shared_pool
from crypto.ranges import PartsRangePlan, RangePlan


class FrameEncryptor:
    """Encrypts exactly ``plaintext_length`` bytes into one frame.

    The length must be known up front (S3 needs a Content-Length anyway), so
    the final chunk is sealed as soon as its last byte arrives.
    """

    def __init__(
        self,
        data_key: DataKey,
        plaintext_length: int,
        *,
        part_number: int = 0,
        pool: BufferPool | None = None,
    ) -> None:
        self._cipher = FrameCipher.new_frame(
            data_key.material,
            data_key.algorithm,
            data_key.chunk_size,
            plaintext_length,
            part_number=part_number,
        )
        self.header = self._cipher.header
        self._pool = pool or shared_pool(data_key.chunk_size)
        self._staging: bytearray | None = self._pool.acquire()
        self._filled = 0
        self._index = 0
        self._pending_header: bytes | None = self.header.pack()
        self._remaining = plaintext_length

    @property
    def ciphertext_length(self) -> int:
        return self.header.ciphertext_length

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        staging = self._staging
        if staging is None:
            raise LengthMismatch("encryptor already finalized")
        if len(data) > self._remaining:
            self._release()
            raise LengthMismatch("more plaintext than the announced length")
        self._remaining -= len(data)
        out: list[bytes] = []
        if self._pending_header is not None:
            out.append(self._pending_header)
            self._pending_header = None
        view = memoryview(data)
        pos, end = 0, len(view)
        cipher = self._cipher
        while pos < end:
            need = cipher.chunk_plaintext_length(self._index) - self._filled
            if self._filled == 0 and end - pos >= need:
                # A whole chunk is in the input: encrypt it in place, no copy.
                out.append(cipher.encrypt_chunk(self._index, view[pos : pos + need]))
                self._index += 1
                pos += need
                continue
            take = min(need, end - pos)
            memoryview(staging)[self._filled : self._filled + take] = view[pos : pos + take]
            self._filled += take
            pos += take
            if take == need:
                chunk = memoryview(staging)[: self._filled]
                out.append(cipher.encrypt_chunk(self._index, chunk))
                self._index += 1
                self._filled = 0
        return out

    def finalize(self) -> list[bytes]:
        if self._staging is None:
            raise LengthMismatch("encryptor already finalized")
        if self._remaining:
            self._release()
            raise LengthMismatch(f"plaintext ended {self._remaining} bytes early")
        out = self.update(b"")
        if self.header.plaintext_length == 0:
            out.append(self._cipher.encrypt_chunk(0, b""))
        self._release()
        return out

    def close(self) -> None:
        """Release the staging buffer of an abandoned stream."""
        self._release()

    def _release(self) -> None:
        if self._staging is not None:
            self._pool.release(self._staging)
            self._staging = None


class _ChunkReader:
    """Decrypts the chunks of one frame from ``first_chunk`` on."""

    def __init__(self, cipher: FrameCipher, first_chunk: int, staging: bytearray) -> None:
        self.cipher = cipher
        self.index = first_chunk
        self.done = False
        self._staging = staging
        self._filled = 0

    def feed(self, view: memoryview, out: list[bytes]) -> int:
        """Consume from ``view`` until the frame ends; return bytes consumed."""
        cipher = self.cipher
        pos, end = 0, len(view)
        while pos < end and not self.done:
            size = cipher.chunk_plaintext_length(self.index) + TAG_LENGTH
            need = size - self._filled
            if self._filled == 0 and end - pos >= need:
                plaintext = cipher.decrypt_chunk(self.index, view[pos : pos + need])
                pos += need
            else:
                take = min(need, end - pos)
                memoryview(self._staging)[self._filled : self._filled + take] = view[
                    pos : pos + take
                ]
                self._filled += take
                pos += take
                if take < need:
                    break
                plaintext = cipher.decrypt_chunk(self.index, memoryview(self._staging)[:size])
                self._filled = 0
            if plaintext:
                out.append(plaintext)
            self.done = cipher.is_final(self.index)
            self.index += 1
        return pos

    @property
    def buffered(self) -> int:
        return self._filled


class _DecryptorBase:
    def __init__(self, data_key: DataKey, pool: BufferPool | None) -> None:
        # A private copy, wiped by close(): the caller may close its DataKey as soon as
        # the decryptor exists, but frame headers (and so frame keys) arrive later.
        self._data_key = DataKey(data_key.material, data_key.algorithm, data_key.chunk_size)
        self._pool = pool or shared_pool(data_key.chunk_size + TAG_LENGTH)
        self._staging: bytearray | None = self._pool.acquire()
        self.failed = False

    def _check_open(self) -> bytearray:
        if self._staging is None:
            raise IntegrityError("decryptor already finished or failed")
        return self._staging

    def close(self) -> None:
        self._data_key.close()
        if self._staging is not None:
            self._pool.release(self._staging)
            self._staging = None

    def _fail(self, error: Exception) -> Exception:
        self.failed = True
        self.close()
        return error


class ObjectDecryptor(_DecryptorBase):
    """Decrypts a whole object: one frame, or a sequence of part frames.

    Every frame header is checked against the data key (algorithm, chunk size
    and key commitment) before its first chunk is decrypted. ``expected_frame``
    (from the envelope of a single-PUT object) must equal the body's header.
    Part frames must have strictly increasing part numbers, or exactly the
    numbers of ``parts`` (e.g. ``range(1, n + 1)``) when the caller knows them;
    ``expected_length`` is checked against the total plaintext at the end.
    """

    def __init__(
        self,
        data_key: DataKey,
        *,
        expected_frame: FrameHeader | None = None,
        multipart: bool = False,
        parts: range | None = None,
        expected_length: int | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        super().__init__(data_key, pool)
        self._expected = expected_frame
        self._multipart = multipart
        self._parts = parts
        self._expected_length = expected_length
        self._header = bytearray()
        self._reader: _ChunkReader | None = None
        self._frames = 0
        self._last_part = 0
        self.plaintext_length = 0

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        staging = self._check_open()
        out: list[bytes] = []
        view = memoryview(data)
        try:
            while len(view):
                if self._reader is None:
                    if self._frames and not self._multipart:
                        raise TrailingDataError("data after the final chunk")
                    take = min(HEADER_LENGTH - len(self._header), len(view))
                    self._header += view[:take]
                    view = view[take:]
                    if len(self._header) == HEADER_LENGTH:
                        self._reader = _ChunkReader(self._open_frame(), 0, staging)
                        self._header.clear()
                    continue
                view = view[self._reader.feed(view, out) :]
                if self._reader.done:
                    self.plaintext_length += self._reader.cipher.header.plaintext_length
                    self._reader = None
                    self._frames += 1
        except CryptoError as error:
            # Any failure (CommitmentMismatch included) ends the stream and frees the buffer.
            raise self._fail(error) from None
        return out

    def finalize(self) -> list[bytes]:
        self._check_open()
        complete = self._reader is None and not self._header and self._frames > 0
        self.close()
        if not complete or (self._parts is not None and self._frames != len(self._parts)):
            self.failed = True
            raise TruncatedError("ciphertext ended before the final chunk")
        if self._expected_length is not None and self.plaintext_length != self._expected_length:
            self.failed = True
            raise IntegrityError("the object's plaintext length is not the expected one")
        return []

    def _open_frame(self) -> FrameCipher:
        header = FrameHeader.parse(self._header)
        key = self._data_key
        if header.algorithm != key.algorithm or header.chunk_size != key.chunk_size:
            raise IntegrityError("frame header does not match the envelope")
        if self._multipart:
            if self._parts is not None:
                if self._frames >= len(self._parts):
                    raise TrailingDataError("data after the final part")
                if header.part_number != self._parts[self._frames]:
                    raise IntegrityError(
                        f"part {header.part_number} where part {self._parts[self._frames]}"
                        " was expected"
                    )
            elif header.part_number <= self._last_part:
                raise IntegrityError("part frames are out of order or duplicated")
            self._last_part = header.part_number
        else:
            if header.part_number != 0:
                raise IntegrityError("a part frame in a single-part object")
            if self._expected is not None and header != self._expected:
                raise IntegrityError("frame header does not match the envelope")
        return FrameCipher.open_frame(key.material, header)


class _PlaintextWindow:
    """Drops ``skip`` leading bytes, then passes ``length`` bytes and no more."""

    def __init__(self, skip: int, length: int) -> None:
        self._skip = skip
        self.remaining = length

    def select(self, pieces: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for piece in pieces:
            if self._skip:
                if self._skip >= len(piece):
                    self._skip -= len(piece)
                    continue
                piece = piece[self._skip :]
                self._skip = 0
            if len(piece) > self.remaining:
                piece = piece[: self.remaining]
            self.remaining -= len(piece)
            if piece:
                out.append(piece)
        return out


def _check_frame_header(header: FrameHeader, data_key: DataKey) -> None:
    if header.algorithm != data_key.algorithm or header.chunk_size != data_key.chunk_size:
        raise FormatError("frame header does not match the data key")


class RangeDecryptor(_DecryptorBase):
    """Decrypts the chunk-aligned ciphertext slice of a :class:`RangePlan`.

    The input starts at ``plan.ciphertext_first`` (a chunk boundary) and must
    be exactly ``plan.ciphertext_length`` bytes; the output is trimmed to the
    requested plaintext bytes.
    """

    def __init__(
        self,
        data_key: DataKey,
        header: FrameHeader,
        plan: RangePlan,
        *,
        pool: BufferPool | None = None,
    ) -> None:
        super().__init__(data_key, pool)
        try:
            _check_frame_header(header, data_key)
            cipher = FrameCipher.open_frame(data_key.material, header)
        except CryptoError:
            self.close()  # hand the staging buffer back to the pool
            raise
        self._reader = _ChunkReader(
            cipher,
            plan.first_chunk,
            self._staging,  # type: ignore[arg-type]
        )
        self._window = _PlaintextWindow(plan.skip, plan.length)
        self._input_remaining = plan.ciphertext_length

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._check_open()
        if len(data) > self._input_remaining:
            raise self._fail(TrailingDataError("more ciphertext than the range covers"))
        self._input_remaining -= len(data)
        decrypted: list[bytes] = []
        try:
            self._reader.feed(memoryview(data), decrypted)
        except IntegrityError as error:
            raise self._fail(error) from None
        return self._window.select(decrypted)

    def finalize(self) -> list[bytes]:
        self._check_open()
        complete = self._input_remaining == 0 and self._reader.buffered == 0
        self.close()
        if not complete or self._window.remaining:
            self.failed = True
            raise TruncatedError("ciphertext range ended early")
        return []


class PartsRangeDecryptor(_DecryptorBase):
    """Decrypts the ciphertext slice of a :class:`PartsRangePlan`, which may span frames.

    ``first_header`` is the header of the first touched frame (the slice starts
    after it, on a chunk boundary); the headers of later frames are read from
    the slice. Every frame must be the part the layout puts there, with the
    length it gives, or decryption fails: this is what confirms the layout.
    """

    def __init__(
        self,
        data_key: DataKey,
        first_header: FrameHeader,
        plan: PartsRangePlan,
        *,
        pool: BufferPool | None = None,
    ) -> None:
        super().__init__(data_key, pool)
        self._layout = plan.layout
        self._part = plan.first_part
        try:
            cipher = self._open(first_header)
        except CryptoError:
            self.close()
            raise
        self._reader: _ChunkReader | None = _ChunkReader(
            cipher,
            plan.first_chunk,
            self._staging,  # type: ignore[arg-type]
        )
        self._header = bytearray()
        self._window = _PlaintextWindow(plan.skip, plan.length)
        self._input_remaining = plan.ciphertext_length

    def _open(self, header: FrameHeader) -> FrameCipher:
        _check_frame_header(header, self._data_key)
        if self._part >= self._layout.part_count:
            raise TrailingDataError("data after the final part")
        expected_length = self._layout.part_plaintext_size(self._part)
        if header.part_number != self._part + 1 or header.plaintext_length != expected_length:
            raise IntegrityError(
                f"found part {header.part_number} of {header.plaintext_length} bytes where the"
                f" layout has part {self._part + 1} of {expected_length} bytes"
            )
        return FrameCipher.open_frame(self._data_key.material, header)

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        staging = self._check_open()
        if len(data) > self._input_remaining:
            raise self._fail(TrailingDataError("more ciphertext than the range covers"))
        self._input_remaining -= len(data)
        decrypted: list[bytes] = []
        view = memoryview(data)
        try:
            while len(view):
                if self._reader is None:
                    take = min(HEADER_LENGTH - len(self._header), len(view))
                    self._header += view[:take]
                    view = view[take:]
                    if len(self._header) == HEADER_LENGTH:
                        cipher = self._open(FrameHeader.parse(self._header))
                        self._reader = _ChunkReader(cipher, 0, staging)
                        self._header.clear()
                    continue
                view = view[self._reader.feed(view, decrypted) :]
                if self._reader.done:
                    self._reader = None
                    self._part += 1
        except CryptoError as error:
            raise self._fail(error) from None
        return self._window.select(decrypted)

    def finalize(self) -> list[bytes]:
        self._check_open()
        complete = (
            self._input_remaining == 0
            and not self._header
            and (self._reader is None or self._reader.buffered == 0)
        )
        self.close()
        if not complete or self._window.remaining:
            self.failed = True
            raise TruncatedError("ciphertext range ended early")
        return []

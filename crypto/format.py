"""The S3G1 frame format: algorithms, frame header, key derivation, chunk AEAD.

A *frame* is one independently encrypted stream (a whole single-PUT object, or
one multipart part). Its layout on the wire::

    header (48 bytes) | chunk 0 | chunk 1 | ... | chunk k-1

    header = "S3G1" | alg u8 | log2(chunk size) u8 | part number u16
             | salt (16) | plaintext length u64 | key commitment (16)
    chunk i = AEAD(frame key, nonce_i, plaintext[i*C:(i+1)*C]) (ciphertext + 16-byte tag)
    nonce_i = 0^7 | i u32 | final flag u8   (STREAM construction)

The frame key and the key commitment both come from
HKDF-SHA256(data key, salt, info = "S3G1 frame" | header[0:8] | plaintext length):
changing the algorithm, chunk size, part number or length in the header yields
another key, and a wrong data key is caught by the commitment before any chunk
is touched. See docs/ENCRYPTION_DESIGN.md.
"""

from __future__ import annotations

import enum
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import AlgorithmNotAllowed, CommitmentMismatch, FormatError, IntegrityError

MAGIC = b"S3G1"
HEADER_LENGTH = 48
TAG_LENGTH = 16
SALT_LENGTH = 16
COMMITMENT_LENGTH = 16
DATA_KEY_LENGTH = 32
MIN_CHUNK_SIZE_LOG2 = 10  # 1 KiB
MAX_CHUNK_SIZE_LOG2 = 24  # 16 MiB
DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNKS_PER_FRAME = 2**32  # the chunk index is a u32 in the nonce
MAX_PART_NUMBER = 10000

_HEADER = struct.Struct(">4sBBH16sQ16s")
_NONCE = struct.Struct(">7xIB")


class Algorithm(enum.IntEnum):
    """Allow-listed chunk AEADs; the value is the id stored in headers and metadata."""

    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> Algorithm:
        for alg, name in _LABELS.items():
            if name == label.upper():
                return alg
        raise AlgorithmNotAllowed(f"algorithm {label!r} is not allowed")

    @classmethod
    def from_id(cls, value: int) -> Algorithm:
        try:
            return cls(value)
        except ValueError:
            raise AlgorithmNotAllowed(f"algorithm id {value} is not allowed") from None


_LABELS = {Algorithm.AES_256_GCM: "AES-256-GCM", Algorithm.CHACHA20_POLY1305: "CHACHA20-POLY1305"}


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


def chunk_size_log2(chunk_size: int) -> int:
    """Validate a chunk size (a power of two between 1 KiB and 16 MiB) and return its log2."""
    log2 = chunk_size.bit_length() - 1
    if chunk_size <= 0 or 1 << log2 != chunk_size:
        raise FormatError(f"chunk size {chunk_size} is not a power of two")
    if not MIN_CHUNK_SIZE_LOG2 <= log2 <= MAX_CHUNK_SIZE_LOG2:
        raise FormatError(f"chunk size {chunk_size} is outside 1 KiB .. 16 MiB")
    return log2


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Chunks in a frame: an empty frame still has one (empty, final) chunk."""
    return max(1, -(-plaintext_length // chunk_size))


@dataclass(frozen=True)
class FrameHeader:
    """The 48-byte header in front of every frame."""

    algorithm: Algorithm
    chunk_size_log2: int
    part_number: int
    salt: bytes
    plaintext_length: int
    commitment: bytes

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_size_log2

    @property
    def chunk_count(self) -> int:
        return chunk_count(self.plaintext_length, self.chunk_size)

    @property
    def ciphertext_length(self) -> int:
        """Bytes of the whole frame, header included."""
        return HEADER_LENGTH + self.plaintext_length + TAG_LENGTH * self.chunk_count

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.algorithm,
            self.chunk_size_log2,
            self.part_number,
            self.salt,
            self.plaintext_length,
            self.commitment,
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> FrameHeader:
        if len(data) != HEADER_LENGTH:
            raise FormatError("frame header has the wrong length")
        magic, alg, log2, part, salt, length, commitment = _HEADER.unpack(data)
        if magic != MAGIC:
            raise FormatError("not an S3G1 frame")
        if not MIN_CHUNK_SIZE_LOG2 <= log2 <= MAX_CHUNK_SIZE_LOG2:
            raise FormatError("frame header has an invalid chunk size")
        if part > MAX_PART_NUMBER:
            raise FormatError("frame header has an invalid part number")
        header = cls(Algorithm.from_id(alg), log2, part, salt, length, commitment)
        if -(-length // header.chunk_size) > MAX_CHUNKS_PER_FRAME:
            raise FormatError("frame is too long for its chunk size")
        return header


def _derive(
    data_key: bytes | bytearray,
    algorithm: Algorithm,
    log2: int,
    part_number: int,
    salt: bytes,
    plaintext_length: int,
) -> tuple[bytes, bytes]:
    bound = _HEADER.pack(
        MAGIC, algorithm, log2, part_number, bytes(16), plaintext_length, bytes(16)
    )
    info = b"S3G1 frame" + bound[:8] + bound[24:32]
    okm = HKDF(hashes.SHA256(), DATA_KEY_LENGTH + COMMITMENT_LENGTH, salt, info).derive(
        bytes(data_key)
    )
    return okm[:DATA_KEY_LENGTH], okm[DATA_KEY_LENGTH:]


def _aead(algorithm: Algorithm, key: bytes) -> _Aead:
    if algorithm is Algorithm.AES_256_GCM:
        return AESGCM(key)
    return ChaCha20Poly1305(key)


class FrameCipher:
    """The chunk AEAD of one frame, keyed from the data key and the frame header.

    Build one with :meth:`new_frame` (encryption) or :meth:`open_frame`
    (decryption, which checks the key commitment first).
    """

    def __init__(self, header: FrameHeader, frame_key: bytes) -> None:
        self.header = header
        self._aead = _aead(header.algorithm, frame_key)
        self._last_index = header.chunk_count - 1

    @classmethod
    def new_frame(
        cls,
        data_key: bytes | bytearray,
        algorithm: Algorithm,
        chunk_size: int,
        plaintext_length: int,
        *,
        part_number: int = 0,
        salt: bytes | None = None,
    ) -> FrameCipher:
        log2 = chunk_size_log2(chunk_size)
        if plaintext_length < 0:
            raise FormatError("plaintext length must not be negative")
        if chunk_count(plaintext_length, chunk_size) > MAX_CHUNKS_PER_FRAME:
            raise FormatError("plaintext is too long for one frame with this chunk size")
        if not 0 <= part_number <= MAX_PART_NUMBER:
            raise FormatError("invalid part number")
        salt = os.urandom(SALT_LENGTH) if salt is None else salt
        if len(salt) != SALT_LENGTH:
            raise FormatError("salt must be 16 bytes")
        key, commitment = _derive(data_key, algorithm, log2, part_number, salt, plaintext_length)
        header = FrameHeader(algorithm, log2, part_number, salt, plaintext_length, commitment)
        return cls(header, key)

    @classmethod
    def open_frame(cls, data_key: bytes | bytearray, header: FrameHeader) -> FrameCipher:
        key, commitment = _derive(
            data_key,
            header.algorithm,
            header.chunk_size_log2,
            header.part_number,
            header.salt,
            header.plaintext_length,
        )
        if not hmac.compare_digest(commitment, header.commitment):
            raise CommitmentMismatch("the data key does not match this frame")
        return cls(header, key)

    def chunk_plaintext_length(self, index: int) -> int:
        """Plaintext bytes in chunk ``index`` (only the final one may be short)."""
        if index < self._last_index:
            return self.header.chunk_size
        return self.header.plaintext_length - self._last_index * self.header.chunk_size

    def is_final(self, index: int) -> bool:
        return index == self._last_index

    def encrypt_chunk(self, index: int, plaintext: bytes | memoryview) -> bytes:
        nonce = _NONCE.pack(index, index == self._last_index)
        return self._aead.encrypt(nonce, plaintext, None)  # type: ignore[arg-type]

    def decrypt_chunk(self, index: int, ciphertext: bytes | memoryview) -> bytes:
        nonce = _NONCE.pack(index, index == self._last_index)
        try:
            return self._aead.decrypt(nonce, ciphertext, None)  # type: ignore[arg-type]
        except InvalidTag:
            raise IntegrityError(
                f"chunk {index} of part {self.header.part_number} failed authentication"
            ) from None

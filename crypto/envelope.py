"""Data keys and the envelope stored in one object-metadata value.

The envelope is the compact string the gateway stores in a single
``x-amz-meta-*`` header::

    v=1;k=<key id>;w=<wrapped data key>[;a=<alg id>][;c=<log2 chunk>]
       [;f=<salt>;s=<plaintext length>;m=<commitment>]   (single-frame objects)
       [;p=1]                                            (multipart: one frame per part)

Binary values are unpadded base64url; defaults (AES-256-GCM, 64 KiB chunks) are
omitted. Version, algorithm, chunk size and the multipart flag are bound into
the key wrap, so editing any of them makes the data key fail to unwrap.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, replace
from types import TracebackType

from crypto.errors import FormatError
from crypto.format import (
    COMMITMENT_LENGTH,
    DATA_KEY_LENGTH,
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE_LOG2,
    MIN_CHUNK_SIZE_LOG2,
    SALT_LENGTH,
    Algorithm,
    FrameHeader,
    chunk_size_log2,
)
from crypto.keyring import Keyring, validate_key_id

ENVELOPE_VERSION = 1
MAX_ENVELOPE_LENGTH = 512
_DEFAULT_LOG2 = chunk_size_log2(DEFAULT_CHUNK_SIZE)
_FIELD = re.compile(r"([a-z])=([A-Za-z0-9_-]*)")
_MAX_PLAINTEXT_LENGTH = 2**63 - 1


class DataKey:
    """A per-object data key with the parameters it encrypts with.

    The key bytes live in a ``bytearray`` that :meth:`close` overwrites; use it
    as a context manager. (The AEAD objects built from it keep their own copy
    inside the ``cryptography`` backend, which Python cannot wipe.)
    """

    def __init__(
        self,
        key: bytes | bytearray,
        algorithm: Algorithm = Algorithm.AES_256_GCM,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if len(key) != DATA_KEY_LENGTH:
            raise FormatError("data keys are 32 bytes")
        chunk_size_log2(chunk_size)
        self._key = bytearray(key)
        self.algorithm = algorithm
        self.chunk_size = chunk_size

    @classmethod
    def generate(
        cls, algorithm: Algorithm = Algorithm.AES_256_GCM, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> DataKey:
        return cls(os.urandom(DATA_KEY_LENGTH), algorithm, chunk_size)

    @property
    def material(self) -> bytearray:
        if not any(self._key):
            raise ValueError("data key was closed")
        return self._key

    def close(self) -> None:
        self._key[:] = bytes(len(self._key))

    def __enter__(self) -> DataKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, length: int | None = None) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise FormatError("invalid base64url value in envelope") from None
    if _b64(data) != text or (length is not None and len(data) != length):
        raise FormatError("invalid base64url value in envelope")
    return data


@dataclass(frozen=True)
class Envelope:
    """What an object needs to be decrypted, minus the KEK."""

    key_id: str
    wrapped_key: bytes
    algorithm: Algorithm = Algorithm.AES_256_GCM
    chunk_size_log2: int = _DEFAULT_LOG2
    multipart: bool = False
    frame: FrameHeader | None = None  # single-frame objects: lets a ranged GET skip the body header
    version: int = ENVELOPE_VERSION

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_size_log2

    @staticmethod
    def _context(version: int, algorithm: Algorithm, log2: int, multipart: bool) -> bytes:
        return f"v={version};a={int(algorithm)};c={log2};p={int(multipart)}".encode()

    @classmethod
    def seal(
        cls,
        data_key: DataKey,
        keyring: Keyring,
        *,
        frame: FrameHeader | None = None,
        multipart: bool = False,
    ) -> Envelope:
        """Wrap ``data_key`` under the keyring's active KEK."""
        log2 = chunk_size_log2(data_key.chunk_size)
        if frame is not None and (
            multipart or frame.algorithm != data_key.algorithm or frame.chunk_size_log2 != log2
        ):
            raise FormatError("frame header does not match the data key")
        context = cls._context(ENVELOPE_VERSION, data_key.algorithm, log2, multipart)
        key_id, wrapped = keyring.wrap(bytes(data_key.material), context)
        return cls(validate_key_id(key_id), wrapped, data_key.algorithm, log2, multipart, frame)

    def open(self, keyring: Keyring) -> DataKey:
        """Unwrap the data key (``UnknownKeyId``, ``KeyUnwrapError`` on failure)."""
        context = self._context(self.version, self.algorithm, self.chunk_size_log2, self.multipart)
        key = keyring.unwrap(self.key_id, self.wrapped_key, context)
        return DataKey(key, self.algorithm, self.chunk_size)

    def rewrap(self, keyring: Keyring) -> Envelope:
        """The same data key wrapped under the keyring's active KEK (key rotation)."""
        with self.open(keyring) as data_key:
            context = self._context(
                self.version, self.algorithm, self.chunk_size_log2, self.multipart
            )
            key_id, wrapped = keyring.wrap(bytes(data_key.material), context)
        return replace(self, key_id=validate_key_id(key_id), wrapped_key=wrapped)

    def encode(self) -> str:
        fields = [f"v={self.version}", f"k={self.key_id}", f"w={_b64(self.wrapped_key)}"]
        if self.algorithm != Algorithm.AES_256_GCM:
            fields.append(f"a={int(self.algorithm)}")
        if self.chunk_size_log2 != _DEFAULT_LOG2:
            fields.append(f"c={self.chunk_size_log2}")
        if self.multipart:
            fields.append("p=1")
        if self.frame is not None:
            fields += [
                f"f={_b64(self.frame.salt)}",
                f"s={self.frame.plaintext_length}",
                f"m={_b64(self.frame.commitment)}",
            ]
        return ";".join(fields)

    @classmethod
    def decode(cls, text: str) -> Envelope:
        """Parse an envelope strictly; anything unexpected is a ``FormatError``."""
        if not isinstance(text, str) or len(text) > MAX_ENVELOPE_LENGTH:
            raise FormatError("envelope is too long")
        values: dict[str, str] = {}
        for part in text.strip().split(";"):
            match = _FIELD.fullmatch(part)
            if match is None or match[1] in values:
                raise FormatError("malformed envelope")
            values[match[1]] = match[2]
        if not set(values) <= set("vkwacpfsm") or not {"v", "k", "w"} <= set(values):
            raise FormatError("malformed envelope")
        if values["v"] != str(ENVELOPE_VERSION):
            raise FormatError(f"unsupported envelope version {values['v']!r}")
        algorithm = Algorithm.from_id(_small_int(values.get("a", "1")))
        log2 = _small_int(values.get("c", str(_DEFAULT_LOG2)))
        if not MIN_CHUNK_SIZE_LOG2 <= log2 <= MAX_CHUNK_SIZE_LOG2:
            raise FormatError("invalid chunk size in envelope")
        if values.get("p", "1") != "1":
            raise FormatError("invalid multipart flag in envelope")
        multipart = "p" in values
        wrapped = _unb64(values["w"])
        if not 28 <= len(wrapped) <= 256:
            raise FormatError("invalid wrapped key length in envelope")
        frame_fields = {"f", "s", "m"} & set(values)
        frame = None
        if frame_fields:
            if frame_fields != {"f", "s", "m"} or multipart:
                raise FormatError("incomplete frame description in envelope")
            length = _small_int(values["s"], _MAX_PLAINTEXT_LENGTH)
            frame = FrameHeader(
                algorithm,
                log2,
                0,
                _unb64(values["f"], SALT_LENGTH),
                length,
                _unb64(values["m"], COMMITMENT_LENGTH),
            )
        return cls(validate_key_id(values["k"]), wrapped, algorithm, log2, multipart, frame)


def _small_int(text: str, maximum: int = 255) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or len(text) > 19:
        raise FormatError("invalid number in envelope")
    value = int(text)
    if value > maximum:
        raise FormatError("number out of range in envelope")
    return value

"""Streaming checks of the body checksums clients send: S3's flexible checksums
(``x-amz-checksum-crc32|crc32c|crc64nvme|sha1|sha256``, as headers or as
aws-chunked trailers) and ``Content-MD5``.

CRC32 comes from zlib and the SHA and MD5 digests from hashlib.  CRC32C and
CRC64/NVME come from awscrt, the library botocore itself uses for them, when
it is installed; otherwise from the pure-Python table implementation below,
which is correct but slow (roughly 15-20 MB/s on one core).  The SDKs default
to CRC32, so the slow path only serves clients that ask for the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import struct
import zlib
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any, Final, Protocol

from addons.s3.errors import S3Error

__all__ = [
    "ALGORITHMS",
    "CHECKSUM_HEADER_PREFIX",
    "CONTENT_MD5",
    "ChecksumVerifier",
    "checksum_headers_in",
    "checksum_verifiers",
]

# The flexible checksum algorithms, by the suffix of their header name.
ALGORITHMS: Final = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
CHECKSUM_HEADER_PREFIX: Final = "x-amz-checksum-"
CONTENT_MD5: Final = "content-md5"
_MD5: Final = "md5"

_UNSUPPORTED = (
    "Checksum algorithm provided is unsupported. Please try again with any of the valid "
    "types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
)
_MULTIPLE = "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."

try:
    _crt: Any = importlib.import_module("awscrt.checksums")
except ImportError:  # the usual case: botocore does not require awscrt
    _crt = None


class _Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


@cache
def _crc_tables(reflected_poly: int) -> tuple[list[int], ...]:
    """Slicing-by-8 tables of a reflected CRC: table k advances a byte k+1 places."""
    first = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ reflected_poly if crc & 1 else crc >> 1
        first.append(crc)
    tables = [first]
    for _ in range(7):
        previous = tables[-1]
        tables.append([(entry >> 8) ^ first[entry & 0xFF] for entry in previous])
    return tuple(tables)


class _TableCrc:
    """A reflected CRC with all-ones initial value and final XOR (CRC32C, CRC64/NVME)."""

    def __init__(self, reflected_poly: int, width: int) -> None:
        self._tables = _crc_tables(reflected_poly)
        self._mask = (1 << width) - 1
        self._width = width
        self._register = self._mask

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        t0, t1, t2, t3, t4, t5, t6, t7 = self._tables
        view = memoryview(data).cast("B")
        whole = len(view) - len(view) % 8
        crc = self._register
        for (word,) in struct.iter_unpack("<Q", view[:whole]):
            word ^= crc
            crc = (
                t7[word & 0xFF]
                ^ t6[(word >> 8) & 0xFF]
                ^ t5[(word >> 16) & 0xFF]
                ^ t4[(word >> 24) & 0xFF]
                ^ t3[(word >> 32) & 0xFF]
                ^ t2[(word >> 40) & 0xFF]
                ^ t1[(word >> 48) & 0xFF]
                ^ t0[word >> 56]
            )
        for byte in view[whole:]:
            crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._register = crc

    def digest(self) -> bytes:
        return (self._register ^ self._mask).to_bytes(self._width // 8, "big")


class _Crc32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class _CrtCrc:
    """awscrt's CRC32C or CRC64/NVME, which take and return the finished value."""

    def __init__(self, function: Any, width: int) -> None:
        self._function = function
        self._width = width
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = int(self._function(bytes(data), self._value))

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width // 8, "big")


_CRC32C_POLY: Final = 0x82F63B78
_CRC64NVME_POLY: Final = 0x9A6C9329AC4BC9B5


def _new_hasher(algorithm: str) -> _Hasher:
    if algorithm == "crc32":
        return _Crc32()
    if algorithm == "crc32c":
        if _crt is not None:
            return _CrtCrc(_crt.crc32c, 32)
        return _TableCrc(_CRC32C_POLY, 32)
    if algorithm == "crc64nvme":
        if _crt is not None and hasattr(_crt, "crc64nvme"):
            return _CrtCrc(_crt.crc64nvme, 64)
        return _TableCrc(_CRC64NVME_POLY, 64)
    # Integrity checks, not security: keeps working where FIPS mode restricts MD5 and SHA-1.
    return hashlib.new(algorithm, usedforsecurity=False)


def _algorithm_of(name: str) -> str:
    """``crc32``, ``x-amz-checksum-crc32``, ``CRC32`` -> ``crc32``; Content-MD5 -> ``md5``."""
    name = name.strip().lower()
    if name in (CONTENT_MD5, _MD5):
        return _MD5
    name = name.removeprefix(CHECKSUM_HEADER_PREFIX)
    if name not in ALGORITHMS:
        raise S3Error("InvalidRequest", _UNSUPPORTED)
    return name


class ChecksumVerifier:
    """Computes one checksum of a body as it streams and compares it with the client's.

    ``algorithm`` is an algorithm or header name (``crc32c``,
    ``x-amz-checksum-crc32c``, ``content-md5``).  ``expected_b64`` is the
    client's value from a header; for a trailer, pass ``None`` and call
    ``set_expected`` once the trailer has arrived.
    """

    def __init__(self, algorithm: str, expected_b64: str | None) -> None:
        self.algorithm = _algorithm_of(algorithm)
        self._hasher = _new_hasher(self.algorithm)
        self._expected: bytes | None = None
        self.expected_b64: str | None = None
        if expected_b64 is not None:
            self._set(expected_b64, trailer=False)

    @property
    def header_name(self) -> str:
        """The (lowercase) header or trailer name that carries this checksum."""
        if self.algorithm == _MD5:
            return CONTENT_MD5
        return CHECKSUM_HEADER_PREFIX + self.algorithm

    def set_expected(self, expected_b64: str) -> None:
        """Set the client's value once it is known, from an aws-chunked trailer."""
        self._set(expected_b64, trailer=True)

    def _set(self, expected_b64: str, *, trailer: bool) -> None:
        value = expected_b64.strip()
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != len(self._hasher.digest()):
            if self.algorithm == _MD5:
                raise S3Error("InvalidDigest", extra={"Content-MD5": value})
            where = "trailing header" if trailer else "header"
            raise S3Error("InvalidRequest", f"Value for {self.header_name} {where} is invalid.")
        self._expected = decoded
        self.expected_b64 = value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hasher.update(data)

    def digest(self) -> bytes:
        """The checksum of the data so far."""
        return self._hasher.digest()

    def digest_b64(self) -> str:
        """The checksum of the data so far, base64-encoded as S3 sends it."""
        return base64.b64encode(self.digest()).decode("ascii")

    def verify(self) -> None:
        """Raise ``BadDigest`` unless the data had the checksum the client gave."""
        if self._expected is None:
            raise ValueError(f"no expected value was given for {self.header_name}")
        computed = self.digest()
        if hmac.compare_digest(computed, self._expected):
            return
        if self.algorithm == _MD5:
            raise S3Error(
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
                extra={
                    # S3 reports the expected digest in hex and its own in base64.
                    "ExpectedDigest": self._expected.hex(),
                    "CalculatedDigest": base64.b64encode(computed).decode("ascii"),
                },
            )
        raise S3Error(
            "BadDigest",
            f"The {self.algorithm.upper()} you specified did not match the calculated checksum.",
        )


def _is_checksum_name(name: str) -> bool:
    return name == CONTENT_MD5 or (
        name.startswith(CHECKSUM_HEADER_PREFIX)
        and name.removeprefix(CHECKSUM_HEADER_PREFIX) in ALGORITHMS
    )


def checksum_headers_in(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The checksum headers of a request: (lowercase name, base64 value) in wire order."""
    found = []
    for name, value in headers:
        lowered = name.lower()
        if _is_checksum_name(lowered):
            found.append((lowered, value.strip()))
    return found


def checksum_verifiers(
    headers: Iterable[tuple[str, str]], *, trailer_names: Sequence[str] = ()
) -> list[ChecksumVerifier]:
    """Verifiers for every checksum a request carries, validated as S3 does.

    ``trailer_names`` is the ``x-amz-trailer`` list; the verifiers of checksum
    trailers have no expected value until ``set_expected`` is called.  At most
    one flexible checksum is allowed, in a header or a trailer, besides
    Content-MD5.
    """
    found = checksum_headers_in(headers)
    md5_values = [value for name, value in found if name == CONTENT_MD5]
    flexible = [(name, value) for name, value in found if name != CONTENT_MD5]
    trailers = []
    for trailer in trailer_names:
        name = trailer.strip().lower()
        if name.startswith(CHECKSUM_HEADER_PREFIX):
            _algorithm_of(name)  # an unknown algorithm is refused as S3 does
            trailers.append(name)
    if len(flexible) + len(trailers) > 1:
        raise S3Error("InvalidRequest", _MULTIPLE)

    verifiers = [ChecksumVerifier(name, value) for name, value in flexible]
    verifiers.extend(ChecksumVerifier(name, None) for name in trailers)
    if md5_values:
        verifiers.append(ChecksumVerifier(CONTENT_MD5, ",".join(md5_values)))
    return verifiers

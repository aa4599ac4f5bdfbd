"""Shared helpers for the crypto tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from crypto import (
    Algorithm,
    CryptoError,
    DataKey,
    FrameEncryptor,
    FrameHeader,
    ObjectDecryptor,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH

# The smallest chunk size keeps property tests fast while objects still span many chunks.
C = 1024
STRIDE = C + TAG_LENGTH
ALGORITHMS = (Algorithm.AES_256_GCM, Algorithm.CHACHA20_POLY1305)

Buffer = bytes | bytearray | memoryview


def fast(max_examples: int) -> settings:
    """Hypothesis settings for this suite: bounded examples, no per-example deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def data_key(
    algorithm: Algorithm = Algorithm.AES_256_GCM, chunk_size: int = C, seed: int = 0
) -> DataKey:
    """A deterministic data key, so failures reproduce."""
    return DataKey(bytes((seed + i) % 256 for i in range(32)), algorithm, chunk_size)


def plaintext_of(length: int, seed: int = 0) -> bytes:
    """Non-repeating plaintext, so a misplaced chunk never decrypts to the right bytes."""
    return bytes((i * 7 + i // 251 + seed) % 256 for i in range(length))


def split(data: bytes, cuts: Iterable[int]) -> list[memoryview]:
    """``data`` cut at the given offsets (duplicates give empty pieces, which is intended)."""
    view = memoryview(data)
    points = [0, *sorted(min(max(c, 0), len(data)) for c in cuts), len(data)]
    return [view[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def pieces_of(draw: st.DrawFn, data: bytes, max_cuts: int = 12) -> list[memoryview]:
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=max_cuts))
    return split(data, cuts)


def check_pieces(out: Sequence[object]) -> None:
    """Output pieces are non-empty, immutable, freshly allocated ``bytes``."""
    for piece in out:
        assert type(piece) is bytes, type(piece)
        assert piece, "empty output piece"


def encrypt(
    key: DataKey,
    plaintext: bytes,
    *,
    part_number: int = 0,
    pieces: Sequence[Buffer] | None = None,
) -> tuple[FrameHeader, bytes]:
    encryptor = FrameEncryptor(key, len(plaintext), part_number=part_number)
    out: list[bytes] = []
    for piece in [plaintext] if pieces is None else pieces:
        out += encryptor.update(piece)
    out += encryptor.finalize()
    check_pieces(out)
    ciphertext = b"".join(out)
    assert len(ciphertext) == encryptor.ciphertext_length
    return encryptor.header, ciphertext


def decrypt(
    key: DataKey,
    ciphertext: bytes,
    *,
    pieces: Sequence[Buffer] | None = None,
    expected_frame: FrameHeader | None = None,
    multipart: bool = False,
) -> bytes:
    decryptor = ObjectDecryptor(key, expected_frame=expected_frame, multipart=multipart)
    out: list[bytes] = []
    for piece in [ciphertext] if pieces is None else pieces:
        out += decryptor.update(piece)
    out += decryptor.finalize()
    check_pieces(out)
    return b"".join(out)


def raises_exactly(expected: type[CryptoError], action: Callable[[], object]) -> CryptoError:
    """Run ``action`` and require exactly ``expected`` (not a sibling or a subclass)."""
    with pytest.raises(CryptoError) as info:
        action()
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    return info.value


def flip(data: bytes, bit: int) -> bytes:
    """``data`` with one bit inverted (bit 0 is the most significant bit of byte 0)."""
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def chunk_offset(index: int) -> int:
    """Offset of chunk ``index`` in a single-frame ciphertext with chunk size ``C``."""
    return HEADER_LENGTH + index * STRIDE

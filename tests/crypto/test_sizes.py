"""Exact plaintext <-> ciphertext size math (listings show plaintext sizes from it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import DEFAULT_CHUNK_SIZE, FormatError, ciphertext_length, plaintext_length
from crypto.format import chunk_size_log2
from crypto.sizes import aligned_frames_plaintext_length, frames_ciphertext_length
from tests.crypto.helpers import C, data_key, encrypt, fast, plaintext_of

K64 = DEFAULT_CHUNK_SIZE
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("plain", "chunk", "cipher"),
    [
        (0, K64, 64),  # an empty object still has its header and one (empty) final chunk
        (1, K64, 65),
        (K64 - 1, K64, 48 + K64 - 1 + 16),
        (K64, K64, 48 + K64 + 16),
        (K64 + 1, K64, 48 + K64 + 1 + 32),
        (5 * MIB, K64, 48 + 5 * MIB + 80 * 16),
        (5 * MIB + 1, K64, 48 + 5 * MIB + 1 + 81 * 16),
        (5 * MIB, 16 * MIB, 48 + 5 * MIB + 16),
        (3, 1024, 67),
    ],
)
def test_known_lengths(plain: int, chunk: int, cipher: int) -> None:
    assert ciphertext_length(plain, chunk) == cipher
    assert plaintext_length(cipher, chunk) == plain


def test_matches_the_encryptor() -> None:
    for size in (0, 1, C - 1, C, C + 1, 3 * C, 3 * C + 17):
        _, ciphertext = encrypt(data_key(), plaintext_of(size))
        assert len(ciphertext) == ciphertext_length(size, C)


@pytest.mark.parametrize("chunk", [1024, 2048, 4096])
def test_inverse_is_exact_for_every_small_length(chunk: int) -> None:
    """Every ciphertext length maps back to its plaintext length, every other one is rejected."""
    image = {ciphertext_length(p, chunk): p for p in range(5 * chunk + 3)}
    for length in range(-5, max(image) + 1):
        if length in image:
            assert plaintext_length(length, chunk) == image[length]
        else:
            with pytest.raises(FormatError):
                plaintext_length(length, chunk)


@fast(300)
@given(
    plain=st.integers(0, 2**45),
    log2=st.integers(10, 24),
)
def test_round_trip_for_large_lengths(plain: int, log2: int) -> None:
    chunk = 1 << log2
    assert plaintext_length(ciphertext_length(plain, chunk), chunk) == plain


@pytest.mark.parametrize("cipher", [-1, 0, 47, 48, 63, 64 + K64 + 1, 48 + K64 + 16 + 16])
def test_invalid_ciphertext_lengths(cipher: int) -> None:
    with pytest.raises(FormatError):
        plaintext_length(cipher, K64)


def test_frames_ciphertext_length() -> None:
    parts = [5 * MIB, 5 * MIB, 3]
    assert frames_ciphertext_length(parts, K64) == (
        ciphertext_length(5 * MIB, K64) * 2 + ciphertext_length(3, K64)
    )
    assert frames_ciphertext_length([], K64) == 0


@pytest.mark.parametrize(
    "parts",
    [
        [7],
        [0],
        [5 * MIB, 5 * MIB, 1],
        [8 * MIB, 8 * MIB, 8 * MIB],
        [16 * MIB, 3 * MIB + 12345],
        [K64, K64, K64, 1],
    ],
)
def test_aligned_frames_plaintext_length(parts: list[int]) -> None:
    cipher = frames_ciphertext_length(parts, K64)
    assert aligned_frames_plaintext_length(cipher, len(parts), K64) == sum(parts)


def test_aligned_frames_rejects_impossible_inputs() -> None:
    with pytest.raises(FormatError):
        aligned_frames_plaintext_length(10**6, 0, K64)
    # An empty last part after aligned parts is one tag more than the formula allows.
    cipher = frames_ciphertext_length([K64, 0], K64)
    with pytest.raises(FormatError):
        aligned_frames_plaintext_length(cipher, 2, K64)


@pytest.mark.parametrize("chunk", [0, -1024, 512, 1000, 3 * 1024, 32 * MIB])
def test_invalid_chunk_sizes(chunk: int) -> None:
    with pytest.raises(FormatError):
        chunk_size_log2(chunk)


@pytest.mark.parametrize(("chunk", "log2"), [(1024, 10), (K64, 16), (16 * MIB, 24)])
def test_valid_chunk_sizes(chunk: int, log2: int) -> None:
    assert chunk_size_log2(chunk) == log2

"""Exact plaintext <-> ciphertext size math.

One frame of ``p`` plaintext bytes with chunk size ``C`` is
``48 + p + 16 * max(1, ceil(p / C))`` bytes. The inverse exists for every valid
ciphertext length, so listings show plaintext sizes without fetching anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from crypto.errors import FormatError
from crypto.format import HEADER_LENGTH, TAG_LENGTH, chunk_count


def ciphertext_length(plaintext_length: int, chunk_size: int) -> int:
    """Bytes stored for one frame holding ``plaintext_length`` bytes."""
    if plaintext_length < 0:
        raise ValueError("negative length")
    return HEADER_LENGTH + plaintext_length + TAG_LENGTH * chunk_count(plaintext_length, chunk_size)


def plaintext_length(ciphertext_length_: int, chunk_size: int) -> int:
    """Inverse of :func:`ciphertext_length`; ``FormatError`` if no plaintext length maps to it."""
    body = ciphertext_length_ - HEADER_LENGTH
    if body < TAG_LENGTH:
        raise FormatError(f"{ciphertext_length_} bytes is too short for an encrypted object")
    chunks = -(-body // (chunk_size + TAG_LENGTH))
    length = body - TAG_LENGTH * chunks
    if ciphertext_length(length, chunk_size) != ciphertext_length_:
        raise FormatError(f"{ciphertext_length_} bytes is not a valid encrypted length")
    return length


def frames_ciphertext_length(part_lengths: Iterable[int], chunk_size: int) -> int:
    """Bytes stored for a multipart object whose parts hold ``part_lengths`` bytes."""
    return sum(ciphertext_length(n, chunk_size) for n in part_lengths)


def aligned_frames_plaintext_length(
    ciphertext_length_: int, part_count: int, chunk_size: int
) -> int:
    """Plaintext length of ``part_count`` frames when every part but the last is a
    whole number of chunks (true for the usual 5/8/16 MiB part sizes and 64 KiB
    chunks). ``FormatError`` if the length is inconsistent with that assumption."""
    if part_count < 1:
        raise FormatError("a multipart object has at least one part")
    extra = (part_count - 1) * HEADER_LENGTH
    return plaintext_length(ciphertext_length_ - extra, chunk_size)

"""Exact plaintext <-> ciphertext size math.

One frame of ``p`` plaintext bytes with chunk size ``C`` is
``48 + p + 16 * max(1, ceil(p / C))`` bytes. The inverse exists for every valid
ciphertext length, so listings show plaintext sizes without fetching anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crypto.errors import FormatError
from crypto.format import HEADER_LENGTH, MAX_PART_NUMBER, TAG_LENGTH, chunk_count


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


def aligned_frames_plaintext_offset(ciphertext_offset: int, frames: int, chunk_size: int) -> int:
    """Plaintext bytes held by the first ``frames`` frames of a multipart object when
    they end at ``ciphertext_offset`` and each holds a whole number of chunks.
    ``FormatError`` if no such frames end there."""
    stride = chunk_size + TAG_LENGTH
    body = ciphertext_offset - frames * HEADER_LENGTH
    if frames < 0 or body < 0 or body % stride or (frames == 0) != (body == 0):
        raise FormatError(f"{ciphertext_offset} bytes are not {frames} frames of whole chunks")
    return body // stride * chunk_size


@dataclass(frozen=True)
class PartLayout:
    """Where the frames of a multipart object lie when every part but the last holds
    ``part_size`` plaintext bytes (SDKs and CLIs upload parts of one size)."""

    part_size: int
    part_count: int
    last_part_size: int
    chunk_size: int

    @property
    def object_size(self) -> int:
        return self.part_size * (self.part_count - 1) + self.last_part_size

    @property
    def ciphertext_length(self) -> int:
        return self.frame_offset(self.part_count - 1) + ciphertext_length(
            self.last_part_size, self.chunk_size
        )

    def part_plaintext_size(self, index: int) -> int:
        """Plaintext bytes of the part at ``index`` (0-based; part number ``index + 1``)."""
        return self.last_part_size if index == self.part_count - 1 else self.part_size

    def frame_offset(self, index: int) -> int:
        """Ciphertext offset of the frame of the part at ``index``."""
        return index * ciphertext_length(self.part_size, self.chunk_size)


def uniform_part_layout(
    ciphertext_length_: int, part_size: int, chunk_size: int, part_count: int | None = None
) -> PartLayout:
    """The layout of a multipart object of ``ciphertext_length_`` bytes whose first
    part holds ``part_size`` bytes, assuming every part but the last is that size.

    With ``part_count`` unknown it follows from the lengths (the last frame is
    never longer than the others). ``FormatError`` if the lengths cannot be such
    a layout; a layout that fits is still only an assumption that the frame
    headers must confirm.
    """
    frame = ciphertext_length(part_size, chunk_size)
    if part_count is None:
        part_count = max(1, -(-ciphertext_length_ // frame))
    if not 1 <= part_count <= MAX_PART_NUMBER:
        raise FormatError(f"{part_count} is not a valid part count")
    if part_count > 1 and (part_size == 0 or part_size % chunk_size):
        raise FormatError("parts before the last must hold whole chunks")
    last_part_size = plaintext_length(ciphertext_length_ - (part_count - 1) * frame, chunk_size)
    if last_part_size > part_size or (part_count == 1 and last_part_size != part_size):
        raise FormatError("the parts of this object are not of one size")
    return PartLayout(part_size, part_count, last_part_size, chunk_size)

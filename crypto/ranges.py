"""HTTP byte ranges on plaintext, mapped to chunk-aligned ciphertext ranges.

S3 semantics: a single ``bytes=`` range is honoured; anything else (several
ranges, other units, syntax errors, ``last < first``) is ignored and the whole
object is served with 200. A range that starts past the end, or a zero suffix,
is unsatisfiable (416 with ``Content-Range: bytes */size``).

Worst-case over-read: the fetched ciphertext covers whole chunks, so at most
``2 * (C - 1)`` plaintext bytes beyond the range plus 16 bytes of tag per
touched chunk (with 64 KiB chunks: under 128 KiB per request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crypto.errors import RangeNotSatisfiable
from crypto.format import HEADER_LENGTH, TAG_LENGTH, chunk_count
from crypto.sizes import PartLayout

_SINGLE_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*")
# Positions saturate here: larger values behave like any position past the end of
# an object, and int() raises ValueError on strings of more than 4300 digits.
_MAX_POSITION = 2**63


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _MAX_POSITION if len(digits) > 19 else min(int(digits), _MAX_POSITION)


@dataclass(frozen=True)
class RangeRequest:
    """One parsed byte-range-spec: ``start-end``, ``start-`` or suffix ``-end``."""

    start: int | None
    end: int | None

    def resolve(self, size: int) -> tuple[int, int]:
        """Inclusive ``(first, last)`` within an object of ``size`` bytes."""
        if self.start is None:
            assert self.end is not None
            if self.end == 0 or size == 0:
                raise RangeNotSatisfiable(size)
            return max(0, size - self.end), size - 1
        if self.start >= size:
            raise RangeNotSatisfiable(size)
        last = size - 1 if self.end is None else min(self.end, size - 1)
        return self.start, last


def parse_range(value: str | None) -> RangeRequest | None:
    """Parse a ``Range`` header; ``None`` means "ignore it and serve everything"."""
    if not value:
        return None
    match = _SINGLE_RANGE.fullmatch(value)
    if match is None:
        return None
    start, end = match[1], match[2]
    if not start and not end:
        return None
    if not start:
        return RangeRequest(None, _position(end))
    if end and _position(end) < _position(start):
        return None
    return RangeRequest(_position(start), _position(end) if end else None)


def content_range_unsatisfied(size: int) -> str:
    return f"bytes */{size}"


class _PlannedWindow:
    """Answer-side figures shared by the range plans."""

    first: int
    last: int
    ciphertext_first: int
    ciphertext_last: int

    def _total(self) -> int:
        raise NotImplementedError

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def ciphertext_length(self) -> int:
        return self.ciphertext_last - self.ciphertext_first + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self._total()}"


@dataclass(frozen=True)
class RangePlan(_PlannedWindow):
    """How to serve plaintext bytes ``first..last`` of a single-frame object."""

    first: int
    last: int
    object_size: int
    chunk_size: int
    first_chunk: int
    last_chunk: int
    ciphertext_first: int
    ciphertext_last: int
    skip: int

    def _total(self) -> int:
        return self.object_size

    @property
    def backend_range(self) -> str:
        """The ``Range`` header to send to the backend."""
        return f"bytes={self.ciphertext_first}-{self.ciphertext_last}"


def plan_range(first: int, last: int, object_size: int, chunk_size: int) -> RangePlan:
    """Minimal chunk-aligned ciphertext range covering plaintext ``first..last``."""
    if not 0 <= first <= last < object_size:
        raise RangeNotSatisfiable(object_size)
    stride = chunk_size + TAG_LENGTH
    first_chunk, last_chunk = first // chunk_size, last // chunk_size
    final_chunk = chunk_count(object_size, chunk_size) - 1
    last_plain = object_size - final_chunk * chunk_size if last_chunk == final_chunk else chunk_size
    return RangePlan(
        first=first,
        last=last,
        object_size=object_size,
        chunk_size=chunk_size,
        first_chunk=first_chunk,
        last_chunk=last_chunk,
        ciphertext_first=HEADER_LENGTH + first_chunk * stride,
        ciphertext_last=HEADER_LENGTH + last_chunk * stride + last_plain + TAG_LENGTH - 1,
        skip=first - first_chunk * chunk_size,
    )


@dataclass(frozen=True)
class PartsRangePlan(_PlannedWindow):
    """How to serve plaintext bytes ``first..last`` of a multipart object.

    The ciphertext slice starts at chunk ``first_chunk`` of the frame of part
    index ``first_part`` (whose header must be fetched separately, from
    ``first_header_offset``) and runs through whole frames, headers included,
    to the end of chunk ``last_chunk`` of part index ``last_part``.
    """

    first: int
    last: int
    layout: PartLayout
    first_part: int
    first_chunk: int
    last_part: int
    last_chunk: int
    ciphertext_first: int
    ciphertext_last: int
    skip: int

    def _total(self) -> int:
        return self.layout.object_size

    @property
    def first_header_offset(self) -> int:
        return self.layout.frame_offset(self.first_part)


def plan_parts_range(first: int, last: int, layout: PartLayout) -> PartsRangePlan:
    """Minimal chunk-aligned ciphertext range covering plaintext ``first..last``."""
    size = layout.object_size
    if not 0 <= first <= last < size:
        raise RangeNotSatisfiable(size)
    chunk_size = layout.chunk_size
    stride = chunk_size + TAG_LENGTH

    def locate(position: int) -> tuple[int, int, int]:
        """(part index, chunk index in the part, offset in the part) of a plaintext byte."""
        part = min(position // layout.part_size, layout.part_count - 1)
        offset = position - part * layout.part_size
        return part, offset // chunk_size, offset

    first_part, first_chunk, first_offset = locate(first)
    last_part, last_chunk, _ = locate(last)
    part_size = layout.part_plaintext_size(last_part)
    last_chunk_length = min(chunk_size, part_size - last_chunk * chunk_size)
    return PartsRangePlan(
        first=first,
        last=last,
        layout=layout,
        first_part=first_part,
        first_chunk=first_chunk,
        last_part=last_part,
        last_chunk=last_chunk,
        ciphertext_first=layout.frame_offset(first_part) + HEADER_LENGTH + first_chunk * stride,
        ciphertext_last=layout.frame_offset(last_part)
        + HEADER_LENGTH
        + last_chunk * stride
        + last_chunk_length
        + TAG_LENGTH
        - 1,
        skip=first_offset - first_chunk * chunk_size,
    )

"""Multipart objects: part layouts, ranges spanning frames, and part-number checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import (
    FormatError,
    IntegrityError,
    ObjectDecryptor,
    PartLayout,
    PartsRangeDecryptor,
    RangeNotSatisfiable,
    TrailingDataError,
    TruncatedError,
    ciphertext_length,
    plan_parts_range,
    uniform_part_layout,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH, FrameHeader
from crypto.sizes import aligned_frames_plaintext_length, aligned_frames_plaintext_offset
from tests.crypto.helpers import (
    STRIDE,
    C,
    check_pieces,
    data_key,
    encrypt,
    fast,
    pieces_of,
    plaintext_of,
    raises_exactly,
)

KEY = data_key()


def multipart_object(sizes: list[int], numbers: list[int] | None = None) -> tuple[bytes, bytes]:
    """(plaintext, ciphertext) of parts of ``sizes`` bytes numbered 1..n (or ``numbers``)."""
    numbers = numbers or list(range(1, len(sizes) + 1))
    plaintexts = [plaintext_of(n, seed=i) for i, n in enumerate(sizes)]
    frames = [encrypt(KEY, p, part_number=n)[1] for p, n in zip(plaintexts, numbers, strict=True)]
    return b"".join(plaintexts), b"".join(frames)


def decrypt_all(ciphertext: bytes, **options: object) -> bytes:
    decryptor = ObjectDecryptor(KEY, multipart=True, **options)  # type: ignore[arg-type]
    out = decryptor.update(ciphertext) + decryptor.finalize()
    return b"".join(out)


# --------------------------------------------------------------------------- layouts


def test_uniform_layout_infers_the_part_count() -> None:
    sizes = [4 * C, 4 * C, 4 * C, 5]
    total = sum(ciphertext_length(n, C) for n in sizes)
    layout = uniform_part_layout(total, 4 * C, C)
    assert layout == PartLayout(4 * C, 4, 5, C)
    assert layout.object_size == sum(sizes)
    assert layout.ciphertext_length == total
    assert layout.frame_offset(3) == 3 * (HEADER_LENGTH + 4 * STRIDE)
    assert uniform_part_layout(total, 4 * C, C, part_count=4) == layout


def test_uniform_layout_of_equal_parts_and_of_one_part() -> None:
    total = 3 * ciphertext_length(2 * C, C)
    assert uniform_part_layout(total, 2 * C, C) == PartLayout(2 * C, 3, 2 * C, C)
    single = ciphertext_length(C + 3, C)
    assert uniform_part_layout(single, C + 3, C) == PartLayout(C + 3, 1, C + 3, C)


@pytest.mark.parametrize(
    ("sizes", "part_size", "part_count"),
    [
        ([4 * C, 4 * C], 4 * C, 3),  # the count says 3, the lengths hold 2
        ([2 * C, 3 * C], 2 * C, 2),  # the last part is larger than the others
        ([2 * C + 1, 5], 2 * C + 1, 2),  # parts of partial chunks
        ([2 * C, 2 * C], 2 * C, 1),  # one part cannot be two frames long
        ([2 * C, 5], 2 * C, 0),
        ([2 * C, 5], 2 * C, 10_001),
    ],
)
def test_uniform_layout_refuses_what_does_not_fit(
    sizes: list[int], part_size: int, part_count: int
) -> None:
    total = sum(ciphertext_length(n, C) for n in sizes)
    with pytest.raises(FormatError):
        uniform_part_layout(total, part_size, C, part_count)


def test_uneven_parts_can_fit_a_uniform_layout_only_by_size() -> None:
    """Lengths alone cannot prove the layout: parts 8+5+5+5+5 look like 8+8+8+4 (+48 B).
    This is why the frame headers must confirm any layout before it is used."""
    k = 8
    sizes = [8 * k * C] + [5 * k * C] * 4
    total = sum(ciphertext_length(n, C) for n in sizes)
    guessed = uniform_part_layout(total, 8 * k * C, C)
    assert guessed.part_count == 4 and guessed.object_size != sum(sizes)


def test_aligned_offsets() -> None:
    assert aligned_frames_plaintext_offset(0, 0, C) == 0
    offset = 2 * (HEADER_LENGTH + 3 * STRIDE)
    assert aligned_frames_plaintext_offset(offset, 2, C) == 6 * C
    for bad in ((offset + 1, 2), (offset, 1), (0, 1), (HEADER_LENGTH, 1)):
        with pytest.raises(FormatError):
            aligned_frames_plaintext_offset(*bad, C)


@fast(200)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4 * C))
def test_aligned_length_and_layout_agree(part_count: int, chunks: int, last: int) -> None:
    part_size = chunks * C
    last = min(last, part_size) if part_count > 1 else part_size
    layout = PartLayout(part_size, part_count, last, C)
    total = layout.ciphertext_length
    assert aligned_frames_plaintext_length(total, part_count, C) == layout.object_size
    assert uniform_part_layout(total, part_size, C) == layout


def test_an_empty_last_part_breaks_the_aligned_size_math() -> None:
    """An empty frame still has a tag, so the gateway refuses empty last parts."""
    total = PartLayout(C, 2, 0, C).ciphertext_length
    with pytest.raises(FormatError):
        aligned_frames_plaintext_length(total, 2, C)


# --------------------------------------------------------------------------- ranges


@st.composite
def layouts(draw: st.DrawFn) -> PartLayout:
    count = draw(st.integers(1, 4))
    part_size = draw(st.integers(1, 3)) * C
    last = draw(st.integers(1, part_size)) if count > 1 else part_size
    return PartLayout(part_size, count, last, C)


def sizes_of(layout: PartLayout) -> list[int]:
    return [layout.part_plaintext_size(i) for i in range(layout.part_count)]


@fast(300)
@given(layout=layouts(), data=st.data())
def test_parts_range_decrypts_the_plaintext_slice(layout: PartLayout, data: st.DataObject) -> None:
    plaintext, ciphertext = multipart_object(sizes_of(layout))
    assert len(ciphertext) == layout.ciphertext_length
    first = data.draw(st.integers(0, layout.object_size - 1))
    last = data.draw(st.integers(first, layout.object_size - 1))
    plan = plan_parts_range(first, last, layout)
    start = plan.first_header_offset
    header = FrameHeader.parse(ciphertext[start : start + HEADER_LENGTH])
    sliced = ciphertext[plan.ciphertext_first : plan.ciphertext_last + 1]
    assert len(sliced) == plan.ciphertext_length
    decryptor = PartsRangeDecryptor(KEY, header, plan)
    out: list[bytes] = []
    for piece in data.draw(pieces_of(sliced)):
        out += decryptor.update(piece)
    out += decryptor.finalize()
    check_pieces(out)
    assert b"".join(out) == plaintext[first : last + 1]
    assert plan.content_range == f"bytes {first}-{last}/{layout.object_size}"
    # Over-read: under a chunk on each side, a tag per chunk and the headers in between.
    frames = plan.last_part - plan.first_part
    assert plan.ciphertext_length - plan.length <= 2 * (C - 1) + (
        TAG_LENGTH * (-(-plan.ciphertext_length // STRIDE) + 1) + HEADER_LENGTH * frames
    )


def test_range_across_a_part_boundary() -> None:
    layout = PartLayout(2 * C, 3, 10, C)
    plan = plan_parts_range(2 * C - 1, 2 * C, layout)
    frame = HEADER_LENGTH + 2 * STRIDE
    assert (plan.first_part, plan.first_chunk, plan.last_part, plan.last_chunk) == (0, 1, 1, 0)
    assert plan.ciphertext_first == HEADER_LENGTH + STRIDE
    assert plan.ciphertext_last == frame + HEADER_LENGTH + STRIDE - 1
    assert plan.skip == C - 1
    last_byte = plan_parts_range(4 * C + 9, 4 * C + 9, layout)
    assert last_byte.ciphertext_last == layout.ciphertext_length - 1


@pytest.mark.parametrize(("first", "last"), [(0, 2 * C + 10), (5, 4), (-1, 0)])
def test_parts_range_outside_the_object(first: int, last: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        plan_parts_range(first, last, PartLayout(C, 2, 10, C))


def _range_input(
    ciphertext: bytes, layout: PartLayout, first: int, last: int
) -> tuple[FrameHeader, bytes, object]:
    plan = plan_parts_range(first, last, layout)
    start = plan.first_header_offset
    header = FrameHeader.parse(ciphertext[start : start + HEADER_LENGTH])
    return header, ciphertext[plan.ciphertext_first : plan.ciphertext_last + 1], plan


def test_parts_range_refuses_a_header_of_another_part() -> None:
    layout = PartLayout(C, 3, C, C)
    _, ciphertext = multipart_object([C, C, C])
    plan = plan_parts_range(C + 5, C + 6, layout)  # in part 2
    part_one = FrameHeader.parse(ciphertext[:HEADER_LENGTH])
    raises_exactly(IntegrityError, lambda: PartsRangeDecryptor(KEY, part_one, plan))


def test_parts_range_detects_a_layout_that_does_not_hold() -> None:
    """Parts of 2, 1 and 2 chunks read as if they were all 2 chunks long."""
    _, ciphertext = multipart_object([2 * C, C, 2 * C])
    wrong = PartLayout(2 * C, 3, C, C)
    header, sliced, plan = _range_input(ciphertext, wrong, 0, 3 * C)
    decryptor = PartsRangeDecryptor(KEY, header, plan)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        decryptor.update(sliced)
        decryptor.finalize()


def test_parts_range_refuses_swapped_parts() -> None:
    _, ciphertext = multipart_object([C, C, C], numbers=[1, 3, 2])
    header, sliced, plan = _range_input(ciphertext, PartLayout(C, 3, C, C), 10, 2 * C + 10)
    decryptor = PartsRangeDecryptor(KEY, header, plan)  # type: ignore[arg-type]
    raises_exactly(IntegrityError, lambda: decryptor.update(sliced))


def test_parts_range_input_must_match_the_plan() -> None:
    _, ciphertext = multipart_object([C, C])
    header, sliced, plan = _range_input(ciphertext, PartLayout(C, 2, C, C), 0, C + 1)
    short = PartsRangeDecryptor(KEY, header, plan)  # type: ignore[arg-type]
    short.update(sliced[:-1])
    raises_exactly(TruncatedError, short.finalize)
    long = PartsRangeDecryptor(KEY, header, plan)  # type: ignore[arg-type]
    raises_exactly(TrailingDataError, lambda: long.update(sliced + b"x"))


# --------------------------------------------------------------------------- whole objects


def test_expected_parts_are_enforced() -> None:
    plaintext, ciphertext = multipart_object([C, 5])
    assert decrypt_all(ciphertext, parts=range(1, 3), expected_length=C + 5) == plaintext
    raises_exactly(TruncatedError, lambda: decrypt_all(ciphertext, parts=range(1, 4)))
    raises_exactly(TrailingDataError, lambda: decrypt_all(ciphertext, parts=range(1, 2)))
    raises_exactly(IntegrityError, lambda: decrypt_all(ciphertext, parts=range(2, 4)))
    raises_exactly(IntegrityError, lambda: decrypt_all(ciphertext, expected_length=C + 4))


def test_a_missing_middle_part_is_detected_when_the_parts_are_known() -> None:
    plaintext, ciphertext = multipart_object([C, 5], numbers=[1, 3])
    assert decrypt_all(ciphertext) == plaintext  # increasing numbers alone allow gaps
    raises_exactly(IntegrityError, lambda: decrypt_all(ciphertext, parts=range(1, 3)))


def test_a_single_part_read() -> None:
    _, ciphertext = multipart_object([C, 7])
    second = ciphertext[ciphertext_length(C, C) :]
    assert decrypt_all(second, parts=range(2, 3)) == plaintext_of(7, seed=1)
    raises_exactly(IntegrityError, lambda: decrypt_all(second, parts=range(1, 2)))

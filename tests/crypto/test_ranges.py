"""HTTP Range parsing and the plaintext -> ciphertext range mapping.

Expected numbers are worked out by hand for 64 KiB chunks (stride 65552 bytes
of ciphertext per full chunk, 48-byte header) rather than recomputed with the
library's own formula; docs/ENCRYPTION_DESIGN.md has the same examples.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import (
    DEFAULT_CHUNK_SIZE,
    RangeNotSatisfiable,
    RangeRequest,
    ciphertext_length,
    parse_range,
    plan_range,
)
from crypto.format import HEADER_LENGTH, TAG_LENGTH
from crypto.ranges import content_range_unsatisfied
from tests.crypto.helpers import C, fast

K64 = DEFAULT_CHUNK_SIZE
# 200000 bytes: chunks 0..2 are full, chunk 3 holds the last 3392 bytes.
SIZE = 200_000
SIZE_CT = 200_112  # 48 + 200000 + 4 * 16

# header, object size -> (first, last, ciphertext_first, ciphertext_last, skip)
SATISFIABLE = [
    ("first byte", "bytes=0-0", SIZE, (0, 0, 48, 65599, 0)),
    ("last byte", "bytes=199999-199999", SIZE, (199999, 199999, 196704, 200111, 3391)),
    ("open range", "bytes=100-", SIZE, (100, 199999, 48, 200111, 100)),
    ("suffix", "bytes=-500", SIZE, (199500, 199999, 196704, 200111, 2892)),
    ("suffix larger than object", "bytes=-300000", SIZE, (0, 199999, 48, 200111, 0)),
    ("suffix equal to object", "bytes=-200000", SIZE, (0, 199999, 48, 200111, 0)),
    ("cross chunk", "bytes=65000-70000", SIZE, (65000, 70000, 48, 131151, 65000)),
    ("inside one chunk", "bytes=70000-80000", SIZE, (70000, 80000, 65600, 131151, 4464)),
    ("exactly one chunk", "bytes=65536-131071", SIZE, (65536, 131071, 65600, 131151, 0)),
    (
        "last byte of a chunk + first of next",
        "bytes=65535-65536",
        SIZE,
        (65535, 65536, 48, 131151, 65535),
    ),
    ("boundary in the middle", "bytes=131071-131072", SIZE, (131071, 131072, 65600, 196703, 65535)),
    ("end clamped", "bytes=199000-999999", SIZE, (199000, 199999, 196704, 200111, 2392)),
    ("end far out of bounds", "bytes=0-" + "9" * 40, SIZE, (0, 199999, 48, 200111, 0)),
    ("whole object", "bytes=0-199999", SIZE, (0, 199999, 48, 200111, 0)),
    ("object of exactly one chunk, suffix", "bytes=-1", K64, (65535, 65535, 48, 65599, 65535)),
    ("one-byte object", "bytes=0-", 1, (0, 0, 48, 64, 0)),
    ("whitespace", " bytes = 7 - 9 ", SIZE, (7, 9, 48, 65599, 7)),
    ("tab whitespace", "bytes=\t7-9\t", SIZE, (7, 9, 48, 65599, 7)),
    ("leading zeros", "bytes=007-0009", SIZE, (7, 9, 48, 65599, 7)),
]


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [pytest.param(h, s, e, id=name) for name, h, s, e in SATISFIABLE],
)
def test_satisfiable_ranges(header: str, size: int, expected: tuple[int, ...]) -> None:
    first, last, ct_first, ct_last, skip = expected
    request = parse_range(header)
    assert request is not None
    assert request.resolve(size) == (first, last)
    plan = plan_range(first, last, size, K64)
    assert (plan.ciphertext_first, plan.ciphertext_last, plan.skip) == (ct_first, ct_last, skip)
    assert plan.length == last - first + 1
    assert plan.content_range == f"bytes {first}-{last}/{size}"
    assert plan.backend_range == f"bytes={ct_first}-{ct_last}"
    # The ciphertext slice starts on a chunk boundary and ends at the end of a chunk.
    assert (plan.ciphertext_first - HEADER_LENGTH) % (K64 + TAG_LENGTH) == 0
    assert plan.ciphertext_last < ciphertext_length(size, K64)


def test_ranges_ending_in_final_chunk_end_at_the_object_end() -> None:
    plan = plan_range(199_999, 199_999, SIZE, K64)
    assert plan.ciphertext_last == SIZE_CT - 1 == ciphertext_length(SIZE, K64) - 1
    assert (plan.first_chunk, plan.last_chunk) == (3, 3)


UNSATISFIABLE = [
    ("start at end", "bytes=200000-", SIZE),
    ("start past end with end", "bytes=200000-200100", SIZE),
    ("start far past end", "bytes=999999-", SIZE),
    ("huge start", "bytes=" + "9" * 5000 + "-", SIZE),
    ("zero suffix", "bytes=-0", SIZE),
    ("empty object, first byte", "bytes=0-0", 0),
    ("empty object, open", "bytes=0-", 0),
    ("empty object, suffix", "bytes=-1", 0),
    ("empty object, large suffix", "bytes=-100", 0),
    ("empty object, zero suffix", "bytes=-0", 0),
]


@pytest.mark.parametrize(
    ("header", "size"), [pytest.param(h, s, id=name) for name, h, s in UNSATISFIABLE]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    request = parse_range(header)
    assert request is not None
    with pytest.raises(RangeNotSatisfiable) as info:
        request.resolve(size)
    assert info.value.size == size
    assert content_range_unsatisfied(size) == f"bytes */{size}"


IGNORED = [
    None,
    "",
    "bytes",
    "bytes=",
    "bytes=-",
    "bytes=0-1,5-6",  # multiple ranges: S3 serves the whole object
    "bytes=0-1, 5-6",
    "items=0-1",
    "bytes 0-1",
    "bytes=abc",
    "bytes=a-b",
    "bytes=5-4",  # last < first
    "bytes=" + "9" * 30 + "-5",
    "bytes=1-2-3",
    "bytes=--1",
    "bytes=-1-",
    "bytes=+1-2",
    "bytes=0x10-",
    "bytes=1.5-2",
    "bytes=\u0661-\u0662",  # non-ASCII digits are not digits in HTTP
]


@pytest.mark.parametrize("header", IGNORED)
def test_ignored_ranges(header: str | None) -> None:
    assert parse_range(header) is None


def test_parsed_forms() -> None:
    assert parse_range("bytes=5-") == RangeRequest(5, None)
    assert parse_range("bytes=-5") == RangeRequest(None, 5)
    assert parse_range("bytes=5-5") == RangeRequest(5, 5)


@pytest.mark.parametrize(
    ("first", "last", "size"), [(1, 0, 10), (0, 10, 10), (-1, 3, 10), (0, 0, 0), (10, 10, 10)]
)
def test_plan_range_rejects_ranges_outside_the_object(first: int, last: int, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        plan_range(first, last, size, K64)


@fast(300)
@given(
    size=st.integers(1, 20 * C),
    data=st.data(),
)
def test_plan_covers_exactly_the_touched_chunks(size: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    plan = plan_range(first, last, size, C)
    stride = C + TAG_LENGTH
    assert plan.first_chunk == first // C and plan.last_chunk == last // C
    assert plan.ciphertext_first == HEADER_LENGTH + plan.first_chunk * stride
    chunk_end = min((plan.last_chunk + 1) * C, size)  # plaintext end of the last touched chunk
    assert (
        plan.ciphertext_last == HEADER_LENGTH + chunk_end + (plan.last_chunk + 1) * TAG_LENGTH - 1
    )
    assert plan.skip == first % C
    # Worst-case over-read: under one chunk on each side plus one tag per touched chunk.
    touched = plan.last_chunk - plan.first_chunk + 1
    assert plan.ciphertext_length - plan.length <= 2 * (C - 1) + TAG_LENGTH * touched


@fast(300)
@given(st.text(alphabet="bytes=-, \t0123456789x", max_size=30), st.integers(0, 10**6))
def test_parse_and_resolve_fuzz(header: str, size: int) -> None:
    request = parse_range(header)
    if request is None:
        return
    try:
        first, last = request.resolve(size)
    except RangeNotSatisfiable:
        return
    assert 0 <= first <= last < size
    plan_range(first, last, size, K64)


@fast(500)
@given(st.text(max_size=100))
def test_parse_range_never_raises(header: str) -> None:
    request = parse_range(header)
    assert request is None or isinstance(request, RangeRequest)

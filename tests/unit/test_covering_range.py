"""The backend range a ranged GET asks for covers what is needed, and little more."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from addons.objectcrypto import covering_range
from crypto import RangeRequest, ciphertext_length, plan_range

C = 64 * 1024
SPAN = re.compile(r"bytes=(\d+)-(\d+)")


@given(
    size=st.integers(1, 200 * C),
    data=st.data(),
    plaintext_possible=st.booleans(),
    prefix_limit=st.sampled_from([0, 100, C, 8 * 1024 * 1024]),
)
def test_covering_range_covers_encrypted_and_plain_reads(
    size: int, data: st.DataObject, plaintext_possible: bool, prefix_limit: int
) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    header = covering_range(
        RangeRequest(first, last),
        C,
        plaintext_possible=plaintext_possible,
        prefix_limit=prefix_limit,
    )
    match = SPAN.fullmatch(header)
    assert match is not None
    start, end = int(match[1]), int(match[2])
    plan = plan_range(first, last, size, C)
    stored_end = ciphertext_length(size, C) - 1
    assert start <= plan.ciphertext_first
    assert min(end, stored_end) >= plan.ciphertext_last
    if plaintext_possible:
        # An unencrypted object is served too: its bytes before the window, if
        # any, are few enough to be read apart.
        assert end >= last
        assert start - first <= prefix_limit
        if first < 48:
            assert start == 0  # checked for being an S3G1 frame
        elif start > first:
            assert start == plan.ciphertext_first  # nothing an encrypted object does not need
    else:
        # Only whole chunks: nothing before the first needed chunk, and at most
        # the multipart allowance after the last one.
        assert start == plan.ciphertext_first
        assert end - plan.ciphertext_last <= C + 16 + 48 * (1 + last // (5 * 1024 * 1024))

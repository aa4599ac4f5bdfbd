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
)
def test_covering_range_covers_encrypted_and_plain_reads(
    size: int, data: st.DataObject, plaintext_possible: bool
) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    header = covering_range(RangeRequest(first, last), C, plaintext_possible=plaintext_possible)
    match = SPAN.fullmatch(header)
    assert match is not None
    start, end = int(match[1]), int(match[2])
    plan = plan_range(first, last, size, C)
    stored_end = ciphertext_length(size, C) - 1
    assert start <= plan.ciphertext_first
    assert min(end, stored_end) >= plan.ciphertext_last
    if plaintext_possible:
        assert start <= first and end >= last  # an unencrypted object is served too
    else:
        # Only whole chunks: nothing before the first needed chunk, and at most
        # the multipart allowance after the last one.
        assert start == plan.ciphertext_first
        assert end - plan.ciphertext_last <= C + 16 + 48 * (1 + last // (5 * 1024 * 1024))

"""enlarge_reads on a real asyncio StreamReader: fewer, larger reads, nothing lost."""

from __future__ import annotations

import asyncio
import os

from addons.largereads import MITMPROXY_READ_SIZE, enlarge_reads


def test_mitmproxy_sized_reads_return_up_to_the_larger_size() -> None:
    async def scenario() -> list[bytes]:
        reader = asyncio.StreamReader()
        enlarge_reads(reader, 256 * 1024)
        reader.feed_data(data)
        reader.feed_eof()
        pieces = []
        while piece := await reader.read(MITMPROXY_READ_SIZE):
            pieces.append(piece)
        return pieces

    data = os.urandom(600 * 1024)
    pieces = asyncio.run(scenario())
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces] == [256 * 1024, 256 * 1024, 88 * 1024]


def test_other_read_sizes_are_left_alone() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader()
        enlarge_reads(reader, 256 * 1024)
        reader.feed_data(b"x" * 1000)
        reader.feed_eof()
        return await reader.read(10), await reader.read()

    first, rest = asyncio.run(scenario())
    assert first == b"x" * 10 and rest == b"x" * 990

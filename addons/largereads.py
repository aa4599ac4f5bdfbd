"""Larger socket reads than mitmproxy's 64 KiB (option ``gw_read_size``).

mitmproxy's connection loop asks its reader for at most 65,535 bytes at a
time, and every read travels through the proxy layers, the body's stream
transform (our cipher) and a drain of every writer: 16,384 trips per GiB.
Each connection's reader is asked for ``gw_read_size`` bytes instead, and may
buffer that much before it pauses the socket, so a busy transfer makes fewer,
larger trips. A read still returns whatever has arrived, so latency is
unchanged, and backpressure still works: the loop drains the writers after
every read, and a full reader pauses its socket. Memory per connection stays
bounded by about twice the read size (ADR 0010).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

log = logging.getLogger("s3gw")

MITMPROXY_READ_SIZE = 65535  # what mitmproxy's loop asks for (proxy/server.py)


class LargeReads:
    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_read_size",
            int,
            256 * 1024,
            "Bytes asked of each socket read (mitmproxy reads 65535); also how much a "
            "connection's reader buffers before it pauses the socket.",
        )

    def client_connected(self, client: connection.Client) -> None:
        self._enlarge(client.id, client)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._enlarge(data.client.id, data.server)

    @staticmethod
    def _enlarge(client_id: str, conn: connection.Connection) -> None:
        size: int = ctx.options.gw_read_size
        if size <= MITMPROXY_READ_SIZE:
            return
        proxyserver: Any = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(client_id) if proxyserver else None
        io = handler.transports.get(conn) if handler is not None else None
        reader = io.reader if io is not None else None
        if isinstance(reader, asyncio.StreamReader):
            enlarge_reads(reader, size)
        # else a mitmproxy_rs stream (local and WireGuard modes): it reads its own way


def enlarge_reads(reader: asyncio.StreamReader, size: int) -> None:
    """Make ``reader`` answer mitmproxy's 65,535-byte reads with up to ``size`` bytes."""
    # StreamReader pauses its socket once it holds twice its limit (64 KiB by default).
    reader._limit = max(reader._limit, size)  # type: ignore[attr-defined]
    read = reader.read

    def larger_read(n: int = -1) -> Awaitable[bytes]:
        return read(size if n == MITMPROXY_READ_SIZE else n)

    reader.read = larger_read  # type: ignore[method-assign,assignment]

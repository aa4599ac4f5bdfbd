"""A small TCP fault proxy for the fault-injection tests.

It forwards every accepted connection to one target and, depending on the
current ``Fault``, passes bytes through, drops or resets the connection after
a number of bytes in one direction, stalls (stops forwarding, keeps the
connection open) after a number of bytes, delays every piece, or answers the
next requests (optionally only those of one method) itself with S3's
``503 SlowDown`` and a ``Retry-After``. It runs an asyncio loop in a
daemon thread of the test process; the fault applies to connections accepted
after ``set_fault``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.harness import Backend, Gateway

READ_SIZE = 16 * 1024


class Kind(Enum):
    PASS = "pass"
    DROP = "drop"  # orderly close (FIN) of both sides after ``after_bytes``
    RESET = "reset"  # RST (SO_LINGER 0) on both sides after ``after_bytes``
    DELAY = "delay"  # sleep ``delay`` seconds before forwarding each piece
    SLOWDOWN = "slowdown"  # answer the next ``count`` requests with 503 SlowDown
    STALL = "stall"  # forward ``after_bytes`` in ``direction``, then nothing until closed


class Direction(Enum):
    UP = "up"  # bytes the connecting side sends (towards the target)
    DOWN = "down"  # bytes the target sends back


@dataclass(frozen=True)
class Fault:
    kind: Kind = Kind.PASS
    direction: Direction = Direction.UP
    after_bytes: int = 0
    delay: float = 0.0
    count: int = 0
    method: str = ""  # SLOWDOWN: only requests with this method ("": any)


PASS = Fault()
SLOWDOWN_RETRY_AFTER = 2  # seconds, in the Retry-After of every SlowDown answer

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY%d</RequestId></Error>"
)


class FaultProxy:
    """``with FaultProxy(host, port) as proxy: ... proxy.url ...``"""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._fault = PASS
        self._slowdowns_left = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.faults_injected = 0  # connections a DROP/RESET fault actually cut
        self.slowdowns_sent = 0
        self.stalls = 0  # connections a STALL fault actually stalled
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port: int = future.result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault
            self._slowdowns_left = fault.count if fault.kind is Kind.SLOWDOWN else 0

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _take_slowdown(self) -> bool:
        with self._lock:
            if self._slowdowns_left > 0:
                self._slowdowns_left -= 1
                return True
            return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            fault = self._fault
        try:
            head = b""
            if fault.kind is Kind.SLOWDOWN:
                # Decided per request, not per connection: a proxy may connect early.
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].decode()
                if (not fault.method or method == fault.method) and self._take_slowdown():
                    await self._answer_slowdown(head, reader, writer)
                    return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            if head:
                up_writer.write(head)
            cut = asyncio.Event()
            await asyncio.gather(
                self._pump(reader, up_writer, fault, Direction.UP, cut, (writer, up_writer)),
                self._pump(up_reader, writer, fault, Direction.DOWN, cut, (writer, up_writer)),
            )
        except Exception:  # a test fault proxy must never crash the loop
            _reset(writer)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault,
        direction: Direction,
        cut: asyncio.Event,
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        cutting = fault.kind in (Kind.DROP, Kind.RESET) and fault.direction is direction
        stalling = fault.kind is Kind.STALL and fault.direction is direction
        sent = 0
        try:
            while not cut.is_set():
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if fault.kind is Kind.DELAY:
                    await asyncio.sleep(fault.delay)
                if stalling and sent + len(data) >= fault.after_bytes:
                    data = data[: fault.after_bytes - sent]
                    if data:
                        writer.write(data)
                        await writer.drain()
                    self.stalls += 1
                    await cut.wait()  # until the other direction ends: a peer gave up
                    for end in both:
                        end.close()
                    return
                if cutting and sent + len(data) >= fault.after_bytes:
                    data = data[: fault.after_bytes - sent]
                    if data:
                        writer.write(data)
                        await writer.drain()
                    cut.set()
                    self.faults_injected += 1
                    for end in both:
                        if fault.kind is Kind.RESET:
                            _reset(end)
                        else:
                            end.close()
                    return
                writer.write(data)
                await writer.drain()
                sent += len(data)
            if fault.kind is Kind.STALL:
                cut.set()  # wakes a stalled other direction
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            cut.set()
            for end in both:
                end.close()

    async def _answer_slowdown(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        self.slowdowns_sent += 1
        body = SLOWDOWN_BODY % next(self._ids)
        length_line = f"Content-Length: {len(body)}\r\n\r\n".encode()
        if head.startswith(b"HEAD "):
            body = b""  # HEAD answers announce a length but carry no body
        writer.write(
            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
            + f"Retry-After: {SLOWDOWN_RETRY_AFTER}\r\n".encode()
            + b"x-amz-request-id: FAULTPROXY\r\nConnection: close\r\n"
            + length_line
            + body
        )
        await writer.drain()
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(frozen=True)
class Faulty:
    """A gateway whose backend connections pass through ``proxy`` (fixture ``faulty``)."""

    backend: Backend
    gateway: Gateway
    proxy: FaultProxy

"""Backpressure and cancellation through the real gateway process.

A slow client or a slow backend must not make the gateway buffer the object
(its RSS stays flat: mitmproxy awaits ``drain()`` on every writer after each
read, so it stops reading from one side while the other is not keeping up),
and a client that disconnects mid-download makes the gateway close its backend
connection at once, which stops the backend's transfer. The backend side is
watched through a byte-counting TCP relay between the gateway and rclone.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from botocore.config import Config

from tests.harness import (
    Backend,
    Gateway,
    GatewayFactory,
    make_bucket,
    rss_bytes,
    tcp_sockets,
    wait_until,
)

MIB = 1024 * 1024
BLOCK = MIB
# What a streaming gateway may add to its RSS while moving an object of any size:
# a few chunks, socket buffers in user space and allocator noise; buffering the
# object (or most of it) would be hundreds of MiB.
RSS_GROWTH_LIMIT = 32 * MIB


# --------------------------------------------------------------------------- a relay


@dataclass
class Relayed:
    """One connection through the relay, seen from the relay."""

    up_bytes: int = 0  # gateway -> backend
    down_bytes: int = 0  # backend -> gateway
    ended_at: float | None = None  # when the first side closed
    ended_by: str | None = None  # "gateway" or "backend"


class Relay:
    """A TCP relay to ``upstream_port`` that counts bytes per connection and can
    slow the gateway -> backend direction down to ``upload_rate`` bytes/s."""

    def __init__(self, upstream_port: int, *, upload_rate: float | None = None) -> None:
        self._upstream_port = upstream_port
        self._upload_rate = upload_rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections: list[Relayed] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            record = Relayed()
            with self._lock:
                self.connections.append(record)
                self._sockets += [downstream, upstream]
            pair = (downstream, upstream)
            for source, target, side in ((downstream, upstream, "gateway"),
                                         (upstream, downstream, "backend")):  # fmt: skip
                threading.Thread(
                    target=self._pump, args=(source, target, side, record, pair), daemon=True
                ).start()

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        side: str,
        record: Relayed,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        """Copy ``source`` (the ``side`` end) to ``target`` until one of them closes."""
        other = "backend" if side == "gateway" else "gateway"
        rate = self._upload_rate if side == "gateway" else None
        started, moved, ended = time.monotonic(), 0, side
        try:
            while data := source.recv(64 * 1024):
                try:
                    target.sendall(data)
                except OSError:
                    ended = other  # the receiving end went away
                    break
                moved += len(data)
                if side == "gateway":
                    record.up_bytes += len(data)
                else:
                    record.down_bytes += len(data)
                if rate is not None:
                    time.sleep(max(0.0, started + moved / rate - time.monotonic()))
        except OSError:
            pass  # the sending end reset the connection
        with self._lock:
            if record.ended_by is None:
                record.ended_at, record.ended_by = time.monotonic(), ended
        for sock in pair:  # either end gone: the relayed connection is over
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@contextlib.contextmanager
def relayed(backend: Backend, **kwargs: float) -> Iterator[tuple[Relay, Backend]]:
    """A relay in front of ``backend`` and a Backend description pointing at it."""
    port = urlsplit(backend.endpoint_url).port
    assert port is not None
    relay = Relay(port, **kwargs)
    try:
        yield (
            relay,
            Backend(
                name=f"{backend.name}-relayed-{relay.port}",
                endpoint_url=f"http://127.0.0.1:{relay.port}",
                access_key_id=backend.access_key_id,
                secret_access_key=backend.secret_access_key,
                process=backend.process,
            ),
        )
    finally:
        relay.close()


# --------------------------------------------------------------------------- clients


def _blocks(total: int, seed: bytes) -> Iterator[bytes]:
    """Deterministic, incompressible data generated on the fly (never held whole)."""
    for index in range(total // BLOCK):
        yield index.to_bytes(8, "big") + seed[8:]


def _presigned(gateway: Gateway, method: str, bucket: str, key: str) -> str:
    s3 = gateway.client(config=Config(signature_version="s3v4"))
    return str(
        s3.generate_presigned_url(f"{method.lower()}_object", Params={"Bucket": bucket, "Key": key})
    )


def _open(method: str, url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return (
        http.client.HTTPConnection(parts.hostname, parts.port, timeout=120),
        f"{parts.path}?{parts.query}",
    )


def _put(gateway: Gateway, bucket: str, key: str, size: int, seed: bytes) -> None:
    connection, target = _open("PUT", _presigned(gateway, "PUT", bucket, key))
    try:
        connection.request(
            "PUT", target, body=_blocks(size, seed), headers={"Content-Length": str(size)}
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        connection.close()


class RssWatch:
    """Samples the gateway's RSS in a thread; ``growth`` is the peak above the start."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._pid = pid
        self.start = rss_bytes(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_bytes(self._pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_slow_reader_does_not_grow_gateway_memory(
    rclone_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """A 256 MiB GET read at 5 MiB/s (about 50 s): the gateway's RSS stays flat."""
    size, rate = 256 * MIB, 5 * MIB
    gateway = gateway_factory(rclone_backend, fresh=True)
    bucket = make_bucket(rclone_backend, prefix="slowreader")
    seed = os.urandom(BLOCK)
    _put(gateway, bucket, "object", size, seed)

    connection, target = _open("GET", _presigned(gateway, "GET", bucket, "object"))
    watch = RssWatch(gateway.pid)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        assert response.status == 200
        started, received = time.monotonic(), 0
        for expected in _blocks(size, seed):
            piece = response.read(BLOCK)
            assert piece == expected, f"wrong data at {received}"
            received += len(piece)
            time.sleep(max(0.0, started + received / rate - time.monotonic()))
        assert response.read() == b""
    finally:
        growth = watch.stop()
        connection.close()
    print(f"gateway RSS grew by {growth / MIB:.1f} MiB during a {size // MIB} MiB slow read")
    assert growth < RSS_GROWTH_LIMIT
    gateway.stop()


def test_slow_backend_does_not_grow_gateway_memory(
    rclone_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """A 96 MiB PUT sent as fast as possible to a backend taking 8 MiB/s: RSS stays flat."""
    size = 96 * MIB
    with relayed(rclone_backend, upload_rate=8 * MIB) as (relay, slow_backend):
        gateway = gateway_factory(slow_backend, fresh=True)
        bucket = make_bucket(rclone_backend, prefix="slowbackend")
        seed = os.urandom(BLOCK)
        watch = RssWatch(gateway.pid)
        started = time.monotonic()
        try:
            _put(gateway, bucket, "object", size, seed)
        finally:
            growth = watch.stop()
        elapsed = time.monotonic() - started
        gateway.stop()
    print(f"gateway RSS grew by {growth / MIB:.1f} MiB during a {elapsed:.0f} s throttled PUT")
    assert elapsed > size / (8 * MIB) * 0.8  # the relay really was the bottleneck
    assert max(c.up_bytes for c in relay.connections) > size  # the ciphertext went through
    assert growth < RSS_GROWTH_LIMIT


def test_client_disconnect_stops_the_backend_transfer(
    rclone_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """Start a 1 GiB GET, read 10 MiB, hang up: the gateway closes its backend connection."""
    size = 1024 * MIB
    with relayed(rclone_backend) as (relay, watched_backend):
        gateway = gateway_factory(watched_backend, fresh=True)
        bucket = make_bucket(rclone_backend, prefix="disconnect")
        _put(gateway, bucket, "object", size, os.urandom(BLOCK))

        before = len(relay.connections)
        connection, target = _open("GET", _presigned(gateway, "GET", bucket, "object"))
        connection.request("GET", target)
        response = connection.getresponse()
        assert response.status == 200
        received = 0
        while received < 10 * MIB:
            received += len(response.read(BLOCK))
        # The download's backend connection is the one still moving data.
        download = wait_until(
            lambda: next(
                (c for c in relay.connections[before:] if c.down_bytes and c.ended_by is None),
                None,
            ),
            10,
            what="the download's backend connection",
        )
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)  # hang up, as a killed client would
        connection.close()
        hung_up = time.monotonic()

        wait_until(lambda: download.ended_by is not None, 10, what="backend connection closed")
        assert download.ended_by == "gateway"  # the gateway closed it, not the backend
        assert download.ended_at is not None and download.ended_at - hung_up < 5
        # Only what was in flight left the backend, nowhere near the whole object.
        assert download.down_bytes < 128 * MIB, download.down_bytes
        moved = download.down_bytes
        time.sleep(1)
        assert download.down_bytes == moved
        assert not [
            s for s in tcp_sockets(gateway.pid) if s.established and s.remote_port == relay.port
        ]
        print(
            f"client hung up after {received // MIB} MiB; the gateway closed its backend"
            f" connection {download.ended_at - hung_up:.2f} s later, after"
            f" {download.down_bytes / MIB:.1f} MiB of {size // MIB} MiB had left the backend"
        )
        gateway.stop()

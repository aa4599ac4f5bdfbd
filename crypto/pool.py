"""Reusable, zeroized staging buffers.

The streaming encryptor and decryptor reassemble arbitrary network reads into
whole chunks. Those staging buffers are taken from a pool instead of being
allocated per object, and are wiped before they go back, because they held
plaintext. Output chunks are *not* pooled: the network layer may keep a
reference to them after the call returns (asyncio transports queue
memoryviews), so each output chunk is a fresh ``bytes`` object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStats:
    """Counters of one pool; ``misses`` grow only when a new buffer is allocated."""

    buffer_size: int
    hits: int
    misses: int
    idle: int
    in_use: int


class BufferPool:
    """A free list of equally sized ``bytearray`` buffers."""

    def __init__(self, buffer_size: int, max_idle: int = 64) -> None:
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        self.buffer_size = buffer_size
        self._max_idle = max_idle
        self._idle: list[bytearray] = []
        self._zeros = bytes(buffer_size)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._in_use = 0

    def acquire(self) -> bytearray:
        with self._lock:
            self._in_use += 1
            if self._idle:
                self._hits += 1
                return self._idle.pop()
            self._misses += 1
        return bytearray(self.buffer_size)

    def release(self, buffer: bytearray) -> None:
        """Zeroize ``buffer`` and keep it for reuse (or drop it if the pool is full)."""
        if len(buffer) != self.buffer_size:
            raise ValueError("buffer does not belong to this pool")
        memoryview(buffer)[:] = self._zeros
        with self._lock:
            self._in_use -= 1
            if len(self._idle) < self._max_idle:
                self._idle.append(buffer)

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                self.buffer_size, self._hits, self._misses, len(self._idle), self._in_use
            )


_shared_pools: dict[int, BufferPool] = {}
_shared_lock = threading.Lock()


def shared_pool(buffer_size: int) -> BufferPool:
    """The process-wide pool for buffers of ``buffer_size`` bytes."""
    with _shared_lock:
        pool = _shared_pools.get(buffer_size)
        if pool is None:
            pool = _shared_pools[buffer_size] = BufferPool(buffer_size)
        return pool


def shared_pool_stats() -> list[PoolStats]:
    """Counters of every process-wide pool (exported as metrics)."""
    with _shared_lock:
        pools = list(_shared_pools.values())
    return [p.stats() for p in pools]

"""Staging-buffer pool counters and zeroization; provider metadata budgets."""

from __future__ import annotations

import pytest

from crypto import (
    BufferPool,
    FormatError,
    FrameEncryptor,
    IntegrityError,
    ObjectDecryptor,
    PoolStats,
    get_profile,
    metadata_budget,
    shared_pool_stats,
)
from crypto.format import TAG_LENGTH
from crypto.profiles import PROFILES
from tests.crypto.helpers import C, data_key, encrypt, flip, plaintext_of


def test_counters_and_reuse() -> None:
    pool = BufferPool(64, max_idle=2)
    first = pool.acquire()
    assert pool.stats() == PoolStats(64, hits=0, misses=1, idle=0, in_use=1)
    first[:] = b"\xaa" * 64
    pool.release(first)
    again = pool.acquire()
    assert again is first  # reused...
    assert again == bytearray(64)  # ...and wiped
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.idle, stats.in_use) == (1, 1, 0, 1)


def test_idle_list_is_bounded() -> None:
    pool = BufferPool(16, max_idle=2)
    buffers = [pool.acquire() for _ in range(4)]
    for buffer in buffers:
        pool.release(buffer)
    stats = pool.stats()
    assert (stats.misses, stats.idle, stats.in_use) == (4, 2, 0)


def test_foreign_buffers_are_rejected() -> None:
    with pytest.raises(ValueError):
        BufferPool(16).release(bytearray(15))
    with pytest.raises(ValueError):
        BufferPool(0)


def _secret_plaintext() -> bytes:
    return b"\x5a" * (3 * C + 100)


def test_streams_return_wiped_buffers() -> None:
    key = data_key()
    plaintext = _secret_plaintext()
    enc_pool, dec_pool = BufferPool(C), BufferPool(C + TAG_LENGTH)
    for round_ in range(3):
        encryptor = FrameEncryptor(key, len(plaintext), pool=enc_pool)
        # Odd-sized pieces force every chunk through the staging buffer.
        out = [
            p
            for i in range(0, len(plaintext), 1000)
            for p in encryptor.update(plaintext[i : i + 1000])
        ]
        ciphertext = b"".join(out + encryptor.finalize())
        decryptor = ObjectDecryptor(key, pool=dec_pool)
        pieces = [ciphertext[i : i + 999] for i in range(0, len(ciphertext), 999)]
        assert b"".join(b"".join(decryptor.update(p)) for p in pieces) == plaintext
        decryptor.finalize()
        for pool in (enc_pool, dec_pool):
            stats = pool.stats()
            assert (stats.hits, stats.misses, stats.in_use) == (round_, 1, 0)
    for pool in (enc_pool, dec_pool):
        buffer = pool.acquire()
        assert not any(buffer), "staging buffer came back with plaintext in it"


def test_failed_and_abandoned_streams_release_their_buffer() -> None:
    key = data_key()
    _, ciphertext = encrypt(key, plaintext_of(2 * C))
    pool = BufferPool(C + TAG_LENGTH)
    decryptor = ObjectDecryptor(key, pool=pool)
    with pytest.raises(IntegrityError):
        decryptor.update(flip(ciphertext, 8 * (len(ciphertext) - 1)))
    assert pool.stats().in_use == 0
    enc_pool = BufferPool(C)
    FrameEncryptor(key, 10, pool=enc_pool).close()
    assert enc_pool.stats().in_use == 0 and enc_pool.stats().idle == 1


def test_shared_pools_are_reported() -> None:
    key = data_key()
    encrypt(key, plaintext_of(10))
    sizes = {s.buffer_size for s in shared_pool_stats()}
    assert C in sizes


# --- provider profiles --------------------------------------------------------------------


def test_profiles() -> None:
    assert get_profile("AWS") is PROFILES["aws"]
    assert {"aws", "minio", "generic"} <= set(PROFILES)
    with pytest.raises(FormatError):
        get_profile("nonexistent")


def test_metadata_budget_counts_user_metadata_bytes() -> None:
    profile = get_profile("aws")
    budget = metadata_budget(
        profile,
        [
            ("X-Amz-Meta-Owner", "alice"),  # prefix is case-insensitive, not counted
            ("x-amz-meta-caf\u00e9", "\u20ac"),  # UTF-8 bytes: 5 + 3
            ("Content-Type", "text/plain"),  # not user metadata
            ("x-amz-server-side-encryption", "AES256"),
        ],
    )
    assert (budget.used, budget.limit) == (5 + 5 + 5 + 3, 2048)
    assert not budget.near_limit and not budget.exceeded


@pytest.mark.parametrize(
    ("used", "near", "exceeded"),
    [(1638, False, False), (1639, True, False), (2048, True, False), (2049, True, True)],
)
def test_metadata_budget_thresholds(used: int, near: bool, exceeded: bool) -> None:
    budget = metadata_budget(get_profile("generic"), [("x-amz-meta-a", "v" * (used - 1))])
    assert budget.used == used
    assert (budget.near_limit, budget.exceeded) == (near, exceeded)

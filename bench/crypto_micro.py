"""Micro-benchmark of the streaming crypto API against raw AEAD calls.

Measures encrypt and decrypt throughput of ``FrameEncryptor`` /
``ObjectDecryptor`` as a ratio to calling the ``cryptography`` AEAD directly on
the same chunks in the same run, for 64 KiB and 1 MiB chunks, with input fed
chunk-aligned or in 65535-byte pieces (what a proxy's socket reads look like).
Then checks with tracemalloc that a long stream does not grow memory per chunk.

Usage (with the project installed, e.g. ``pip install -e .``)::

    python bench/crypto_micro.py [--total-mib 256] [--repeat 3]

Prints a table and writes bench/results/crypto_micro.json. Not a test: the
numbers depend on the machine; the target is a ratio >= 0.8 for 64 KiB chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from crypto import Algorithm, DataKey, FrameEncryptor, ObjectDecryptor
from crypto.format import HEADER_LENGTH, TAG_LENGTH

KIB = 1024
MIB = 1024 * KIB
MITMPROXY_READ = 65535
# One object is encrypted/decrypted repeatedly until the total is reached, so the
# benchmark needs no more than a few copies of it in memory.
OBJECT_SIZE = 32 * MIB
_NONCE = struct.Struct(">7xIB")


@dataclass
class Row:
    algorithm: str
    chunk_kib: int
    feed: str
    encrypt_mb_s: float
    raw_encrypt_mb_s: float
    encrypt_ratio: float
    decrypt_mb_s: float
    raw_decrypt_mb_s: float
    decrypt_ratio: float


def pieces(data: bytes, sizes: Iterator[int]) -> list[memoryview]:
    view, out, pos = memoryview(data), [], 0
    while pos < len(data):
        size = next(sizes)
        out.append(view[pos : pos + size])
        pos += size
    return out


def forever(*sizes: int) -> Iterator[int]:
    """The first sizes once, then the last one repeated."""
    yield from sizes[:-1]
    while True:
        yield sizes[-1]


def rate(action: Callable[[], None], nbytes: int) -> float:
    """MB/s (10^6 bytes per second) of one run of ``action``."""
    start = time.perf_counter()
    action()
    return nbytes / (time.perf_counter() - start) / 1e6


def bench_case(algorithm: Algorithm, chunk: int, feed: str, total: int, repeat: int) -> Row:
    rounds = max(1, total // OBJECT_SIZE)
    nbytes = rounds * OBJECT_SIZE
    key = DataKey(os.urandom(32), algorithm, chunk)
    plaintext = os.urandom(OBJECT_SIZE)

    encryptor = FrameEncryptor(key, OBJECT_SIZE)
    ciphertext = b"".join(encryptor.update(plaintext) + encryptor.finalize())
    if feed == "aligned":
        plain_pieces = pieces(plaintext, forever(chunk))
        # Decrypt input cut exactly at ciphertext chunk boundaries (the best case).
        cipher_pieces = pieces(
            ciphertext, forever(HEADER_LENGTH + chunk + TAG_LENGTH, chunk + TAG_LENGTH)
        )
    else:
        plain_pieces = pieces(plaintext, forever(MITMPROXY_READ))
        cipher_pieces = pieces(ciphertext, forever(MITMPROXY_READ))

    def stream_encrypt() -> None:
        for _ in range(rounds):
            enc = FrameEncryptor(key, OBJECT_SIZE)
            for piece in plain_pieces:
                enc.update(piece)
            enc.finalize()

    def stream_decrypt() -> None:
        for _ in range(rounds):
            dec = ObjectDecryptor(key)
            for piece in cipher_pieces:
                dec.update(piece)
            dec.finalize()

    # The baseline: the same AEAD on the same chunks, no framing, no reassembly.
    raw = (AESGCM if algorithm is Algorithm.AES_256_GCM else ChaCha20Poly1305)(os.urandom(32))
    chunk_views = pieces(plaintext, forever(chunk))
    nonces = [_NONCE.pack(i, i == len(chunk_views) - 1) for i in range(len(chunk_views))]
    sealed = [raw.encrypt(n, c, None) for n, c in zip(nonces, chunk_views, strict=True)]

    def raw_encrypt() -> None:
        for _ in range(rounds):
            for nonce, view in zip(nonces, chunk_views, strict=True):
                raw.encrypt(nonce, view, None)

    def raw_decrypt() -> None:
        for _ in range(rounds):
            for nonce, blob in zip(nonces, sealed, strict=True):
                raw.decrypt(nonce, blob, None)

    # Interleave stream and raw runs so frequency drift and noisy neighbours hit both
    # alike. Throughput is the best run; the ratio is the median of the per-round
    # ratios, which a single lucky or unlucky run cannot skew.
    enc, raw_enc, dec, raw_dec = [], [], [], []
    for _ in range(repeat):
        enc.append(rate(stream_encrypt, nbytes))
        raw_enc.append(rate(raw_encrypt, nbytes))
        dec.append(rate(stream_decrypt, nbytes))
        raw_dec.append(rate(raw_decrypt, nbytes))
    return Row(
        algorithm=algorithm.label,
        chunk_kib=chunk // KIB,
        feed=feed,
        encrypt_mb_s=max(enc),
        raw_encrypt_mb_s=max(raw_enc),
        encrypt_ratio=median(s / r for s, r in zip(enc, raw_enc, strict=True)),
        decrypt_mb_s=max(dec),
        raw_decrypt_mb_s=max(raw_dec),
        decrypt_ratio=median(s / r for s, r in zip(dec, raw_dec, strict=True)),
    )


def memory_check(chunks: int, chunk: int = 64 * KIB) -> dict[str, float | int]:
    """Stream ``chunks`` chunks through encryptor -> decryptor in 65535-byte reads and
    compare traced memory after a short warm-up with memory at the end."""
    key = DataKey(os.urandom(32), Algorithm.AES_256_GCM, chunk)
    length = chunks * chunk
    source = os.urandom(MITMPROXY_READ)
    warmup = 16 * chunk

    tracemalloc.start()
    try:
        encryptor = FrameEncryptor(key, length)
        decryptor = ObjectDecryptor(key)
        fed, before = 0, 0
        while fed < length:
            piece = memoryview(source)[: min(MITMPROXY_READ, length - fed)]
            for ct in encryptor.update(piece):
                decryptor.update(ct)  # plaintext output is dropped, as after a send
            fed += len(piece)
            if before == 0 and fed >= warmup:
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
        for ct in encryptor.finalize():
            decryptor.update(ct)
        decryptor.finalize()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    measured = chunks - warmup // chunk
    return {
        "chunks": chunks,
        "chunk_kib": chunk // KIB,
        "bytes_streamed": length,
        "before_bytes": before,
        "after_bytes": after,
        "peak_above_before_bytes": peak - before,
        "growth_bytes": after - before,
        "growth_per_chunk_bytes": (after - before) / measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mib", type=int, default=256, help="bytes per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best)")
    parser.add_argument("--memory-chunks", type=int, default=4096)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "crypto_micro.json",
    )
    args = parser.parse_args()
    total = args.total_mib * MIB

    rows = []
    for algorithm in (Algorithm.AES_256_GCM, Algorithm.CHACHA20_POLY1305):
        for chunk in (64 * KIB, 1 * MIB):
            for feed in ("aligned", "65535"):
                rows.append(bench_case(algorithm, chunk, feed, total, args.repeat))

    header = (
        f"{'algorithm':<18} {'chunk':>6} {'feed':>8} | {'enc MB/s':>9} {'raw':>9} {'ratio':>6}"
        f" | {'dec MB/s':>9} {'raw':>9} {'ratio':>6}"
    )
    print(
        f"{total // MIB} MiB per measurement; MB/s = best of {args.repeat} runs,"
        " ratio = median of the per-run stream/raw ratios"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.algorithm:<18} {f'{r.chunk_kib}K':>6} {r.feed:>8} | {r.encrypt_mb_s:9.0f}"
            f" {r.raw_encrypt_mb_s:9.0f} {r.encrypt_ratio:6.2f} | {r.decrypt_mb_s:9.0f}"
            f" {r.raw_decrypt_mb_s:9.0f} {r.decrypt_ratio:6.2f}"
        )

    memory = memory_check(args.memory_chunks)
    print(
        f"\nmemory, {memory['chunks']} x {memory['chunk_kib']} KiB chunks through"
        f" encryptor -> decryptor in 65535-byte reads:"
        f"\n  peak above steady state {memory['peak_above_before_bytes'] / KIB:.1f} KiB,"
        f" growth {memory['growth_bytes']} bytes"
        f" ({memory['growth_per_chunk_bytes']:.3f} bytes/chunk)"
    )

    target = [r for r in rows if r.chunk_kib == 64]
    ok = all(min(r.encrypt_ratio, r.decrypt_ratio) >= 0.8 for r in target)
    print(f"\ntarget ratio >= 0.8 for 64 KiB chunks: {'met' if ok else 'NOT met'}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "total_bytes": total,
                "repeat": args.repeat,
                "python": platform.python_version(),
                "cryptography": cryptography.__version__,
                "machine": platform.machine(),
                "rows": [asdict(r) for r in rows],
                "memory": memory,
                "target_met": ok,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

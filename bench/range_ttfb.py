"""Time to first byte of a 1 MiB range: gateway (encrypted) vs. a plain mitmproxy.

Starts ``rclone serve s3`` on loopback, a plain ``mitmdump --mode reverse:``
in front of it with no addons (the passthrough: what mitmproxy itself costs),
the same under ``python -O`` (as ``run`` starts the gateway, ADR 0011) and the
gateway. Stores one large object twice, unencrypted directly on the
backend and encrypted through the gateway, then GETs the same 1 MiB range from
the middle of it through both, interleaved, and reports median and p90 of the
time to the first body byte and of the total time, and the gateway/passthrough
ratios against both passthroughs (target: median TTFB ratio < 1.05).

It also reports the floor that fail-closed decryption sets: the gateway may
release no byte of a chunk before the whole chunk has arrived and its tag is
verified, so its first byte cannot leave before a passthrough has delivered the
range up to the end of that first chunk. That time, measured on the
passthrough, is printed as a ratio to the passthrough's own first byte (what
a gateway doing no work at all would score) and the gateway is also compared
with it.

How many bytes the gateway fetches from the backend for that range is
measured, not computed: a second gateway reads through another plain mitmdump
that records every backend response (``-w``); the Content-Length of those
responses is what crossed the wire. Target: at most two chunks of over-read.

Usage, from the repository root with the test extras installed::

    python -m bench.range_ttfb [--object-mib 1024] [--repetitions 100]

Prints a summary and writes bench/results/range_ttfb.json. Not a test: the
numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mitmproxy.version
from mitmproxy import http as mitm_http
from mitmproxy import io as flow_io

from bench.common import OPTIMIZED, QUIET, Sample, Target, start_passthrough, summarize
from crypto.format import TAG_LENGTH
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_USER,
    Backend,
    Credentials,
    make_bucket,
    start_gateway,
    start_rclone,
)
from tests.rawclient import signed_request

KIB = 1024
MIB = 1024 * KIB
RANGE_LENGTH = 1 * MIB
RESULTS = Path(__file__).resolve().parent / "results" / "range_ttfb.json"


# --------------------------------------------------------------------------- data


def pattern_object(size: int) -> bytes:
    """``size`` bytes: one random 1 MiB block repeated, each copy prefixed by its index."""
    block = bytearray(os.urandom(MIB))
    data = bytearray(size)
    for offset in range(0, size, MIB):
        piece = block[: min(MIB, size - offset)]
        piece[:8] = (offset // MIB).to_bytes(8, "big")
        data[offset : offset + len(piece)] = piece
    return bytes(data)


def put_object(endpoint: str, credentials: Credentials, path: str, body: bytes) -> float:
    start = time.perf_counter()
    response = signed_request(endpoint, credentials, "PUT", path, body=body)
    if response.status != 200:
        raise RuntimeError(f"PUT {endpoint}{path}: {response.status} {response.body[:300]!r}")
    return time.perf_counter() - start


def fetched_from_backend(flows_path: Path, object_path: str) -> list[dict[str, Any]]:
    """The ranged GETs the counting proxy saw: the Range sent and the bytes received."""
    seen = []
    with open(flows_path, "rb") as flows:
        for flow in flow_io.FlowReader(flows).stream():
            if not isinstance(flow, mitm_http.HTTPFlow) or flow.response is None:
                continue
            request = flow.request
            if request.method != "GET" or request.path.split("?")[0] != object_path:
                continue
            seen.append(
                {
                    "backend_range": request.headers.get("range"),
                    "status": flow.response.status_code,
                    "content_range": flow.response.headers.get("content-range"),
                    "bytes": int(flow.response.headers["content-length"]),
                }
            )
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-mib", type=int, default=1024, help="object size in MiB")
    parser.add_argument("--repetitions", type=int, default=100, help="timed GETs per path")
    parser.add_argument("--warmup", type=int, default=5, help="untimed GETs per path first")
    parser.add_argument("--counted", type=int, default=5, help="GETs through the byte counter")
    parser.add_argument(
        "--no-plaintext-reads",
        action="store_true",
        help="gateways with encryption.allow_plaintext_reads false: the backend range is then"
        " the chunks alone, not their union with the plaintext positions (ADR 0003)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        help="the gateways' encryption.chunk_size (plaintext bytes per chunk)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    size = args.object_mib * MIB
    # Mid-object and not chunk-aligned, so both ends of the range fall inside chunks.
    first = size // 2 + 12345
    last = first + RANGE_LENGTH - 1
    range_header = f"bytes={first}-{last}"
    # Plaintext from the range's first byte to the end of the chunk holding it.
    chunk_size = args.chunk_size
    stride = chunk_size + TAG_LENGTH
    to_chunk_end = chunk_size - first % chunk_size
    load_before = os.getloadavg()
    run_started = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="range-ttfb-"))
    stoppable: list[Any] = []
    try:
        backend = start_rclone(work / "rclone", work / "rclone" / "data")
        stoppable.append(backend)
        overrides: dict[str, Any] = {"encryption": {"chunk_size": chunk_size}}
        if args.no_plaintext_reads:
            overrides["encryption"]["allow_plaintext_reads"] = False
        # gw_lean as `s3-encryption-gateway run` sets it (ADR 0009).
        gateway_args = [*QUIET, "--set", "gw_lean=true"]
        gateway = start_gateway(
            backend, work / "gateway", overrides=overrides, extra_args=gateway_args, env=OPTIMIZED
        )
        stoppable.append(gateway)
        passthrough = start_passthrough("passthrough", backend.endpoint_url, work / "pass", [])
        stoppable.append(passthrough)
        optimized = start_passthrough(
            "passthrough-O", backend.endpoint_url, work / "pass-O", [], optimized=True
        )
        stoppable.append(optimized)
        flows_path = work / "counter" / "backend.flows"
        counter = start_passthrough(
            "counter", backend.endpoint_url, work / "counter", ["-w", str(flows_path)]
        )
        stoppable.append(counter)
        counted_gateway = start_gateway(
            Backend(
                name="rclone-counted",
                endpoint_url=counter.url,
                access_key_id=backend.access_key_id,
                secret_access_key=backend.secret_access_key,
                process=counter.process,
            ),
            work / "gateway-counted",
            overrides=overrides,
            extra_args=gateway_args,
            env=OPTIMIZED,
        )
        stoppable.append(counted_gateway)

        bucket = make_bucket(backend, prefix="bench")
        plain_path, encrypted_path = f"/{bucket}/plain", f"/{bucket}/encrypted"
        print(f"building a {args.object_mib} MiB object ...", flush=True)
        data = pattern_object(size)
        put_plain = put_object(backend.endpoint_url, backend.credentials, plain_path, data)
        print(f"  stored unencrypted on the backend in {put_plain:.1f} s", flush=True)
        put_encrypted = put_object(gateway.url, GATEWAY_USER, encrypted_path, data)
        print(f"  stored encrypted through the gateway in {put_encrypted:.1f} s", flush=True)
        expected = data[first : last + 1]
        del data

        targets = {
            "passthrough": Target("passthrough", passthrough.url, backend.credentials, plain_path),
            "passthrough-O": Target(
                "passthrough-O", optimized.url, backend.credentials, plain_path
            ),
            "gateway": Target("gateway", gateway.url, GATEWAY_USER, encrypted_path),
        }

        def checked_get(target: Target) -> Sample:
            sample, body, headers = target.get(range_header, first_piece=to_chunk_end)
            if body != expected or headers.get("content-range") != f"bytes {first}-{last}/{size}":
                raise RuntimeError(f"{target.name}: wrong answer {headers}")
            return sample

        for _ in range(args.warmup):
            for target in targets.values():
                checked_get(target)
        samples: dict[str, list[Sample]] = {name: [] for name in targets}
        for index in range(args.repetitions):
            order = list(targets.values())
            if index % 2:
                order.reverse()  # alternate who goes first
            for target in order:
                samples[target.name].append(checked_get(target))
        for target in targets.values():
            target.close()

        counted = Target("counted", counted_gateway.url, GATEWAY_USER, encrypted_path)
        for _ in range(args.counted):
            checked_get(counted)
        counted.close()
        counted_gateway.stop()
        counter.stop()  # flushes the flow file
        backend_reads = fetched_from_backend(flows_path, encrypted_path)
    finally:
        for process in reversed(stoppable):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)

    if len(backend_reads) != args.counted:
        raise RuntimeError(f"expected {args.counted} backend GETs, saw {backend_reads}")
    fetched = max(read["bytes"] for read in backend_reads)
    over_read = fetched - RANGE_LENGTH
    stats = {
        name: {
            "ttfb": summarize([s.ttfb for s in values]),
            "headers": summarize([s.headers for s in values]),
            "first_chunk_end": summarize([s.first_piece for s in values]),
            "total": summarize([s.total for s in values]),
        }
        for name, values in samples.items()
    }

    def ratios_over(baseline: str) -> dict[str, float]:
        def ratio(metric: str, stat: str) -> float:
            gateway_value: float = stats["gateway"][metric][stat]
            return gateway_value / stats[baseline][metric][stat]

        return {
            "ttfb_median": ratio("ttfb", "median_ms"),
            "ttfb_p90": ratio("ttfb", "p90_ms"),
            "total_median": ratio("total", "median_ms"),
            "total_p90": ratio("total", "p90_ms"),
        }

    ratios = ratios_over("passthrough")
    ratios_optimized = ratios_over("passthrough-O")
    floors = {
        name: {
            "first_chunk_end_median_ms": stats[name]["first_chunk_end"]["median_ms"],
            # What a gateway adding no time at all would score against the target.
            "floor_over_ttfb": stats[name]["first_chunk_end"]["median_ms"]
            / stats[name]["ttfb"]["median_ms"],
            "gateway_ttfb_over_floor": stats["gateway"]["ttfb"]["median_ms"]
            / stats[name]["first_chunk_end"]["median_ms"],
        }
        for name in ("passthrough", "passthrough-O")
    }
    result = {
        "object_bytes": size,
        "range": range_header,
        "range_bytes": RANGE_LENGTH,
        "chunk_size": chunk_size,
        "allow_plaintext_reads": not args.no_plaintext_reads,
        "repetitions": args.repetitions,
        "warmup": args.warmup,
        "backend": "rclone serve s3 (local directory)",
        "connections": "persistent, one per path; requests interleaved, order alternating",
        "upload_seconds": {"unencrypted_direct": put_plain, "encrypted_gateway": put_encrypted},
        "stats": stats,
        "ratios_gateway_over_passthrough": ratios,
        "ratios_gateway_over_passthrough_optimized": ratios_optimized,
        "verification_floor": {"plaintext_to_first_chunk_end": to_chunk_end, **floors},
        "backend_reads_for_gateway_range": backend_reads,
        "backend_bytes_fetched": fetched,
        "over_read_bytes": over_read,
        "over_read_chunks": over_read / stride,
        "targets": {
            "ttfb_median_ratio_below": 1.05,
            "over_read_at_most_bytes": 2 * stride,
            "ttfb_met": ratios["ttfb_median"] < 1.05,
            "over_read_met": over_read <= 2 * stride,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
            "mitmproxy": mitmproxy.version.VERSION,
            "machine": platform.machine(),
            "run_seconds": time.perf_counter() - run_started,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{range_header} of a {args.object_mib} MiB object, {args.repetitions} GETs per path")
    print(f"{'':13} {'TTFB med':>9} {'p90':>8} {'total med':>10} {'p90':>8}   (ms)")
    for name in ("passthrough", "passthrough-O", "gateway"):
        s = stats[name]
        print(
            f"{name:13} {s['ttfb']['median_ms']:9.2f} {s['ttfb']['p90_ms']:8.2f}"
            f" {s['total']['median_ms']:10.2f} {s['total']['p90_ms']:8.2f}"
        )
    for label, values in (("passthrough", ratios), ("passthrough-O", ratios_optimized)):
        print(
            f"gateway/{label}: TTFB median {values['ttfb_median']:.3f}, p90"
            f" {values['ttfb_p90']:.3f}; total median {values['total_median']:.3f}, p90"
            f" {values['total_p90']:.3f} (target TTFB median < 1.05)"
        )
    for label, floor in floors.items():
        print(
            f"{label} delivers the range up to the first chunk's end ({to_chunk_end} bytes)"
            f" in {floor['first_chunk_end_median_ms']:.2f} ms = {floor['floor_over_ttfb']:.3f}"
            f" of its TTFB (the floor for verified decryption); gateway TTFB"
            f" {floor['gateway_ttfb_over_floor']:.3f} of that floor"
        )
    print(
        f"backend bytes for the gateway's range: {fetched} ({backend_reads[0]['backend_range']}),"
        f" over-read {over_read} = {over_read / stride:.2f} chunks (target <= 2)"
    )
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

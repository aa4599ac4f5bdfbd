"""The gateway side by side with the backend, a plain mitmdump and rclone crypt, in one run.

Starts on loopback: ``rclone serve s3`` over a temporary directory (the
backend), a plain ``mitmdump --mode reverse:`` with no addons in front of it
(the proxy's own floor), the same under ``python -O`` (``mitmdump-O``: the
floor for a gateway that ``run`` starts under ``-O``, ADR 0011), the gateway
(``s3-encryption-gateway run``, once per ``--workers`` count) in front of it,
and the peer: ``rclone serve s3`` on a
``crypt`` remote wrapping the same directory (rclone's own encrypting S3
front), and the same peer on a ``crypt`` remote over an ``s3`` remote pointing at
the backend (the same two HTTP hops as the gateway). rclone's backend runs
without ETag hashing (``--etag-hash=``, ``--backend-md5`` turns it back on):
its MD5 makes it read every object twice per GET, and the crypt peer over the
directory has no hashes. Then measures, interleaving the targets and repeating
each measurement:

- large-object PUT and GET throughput (``--size``, 1 GiB by default);
- 4 KiB PUT+GET operations per second with 16 concurrent clients;
- time to the first byte of a 1 MiB range from the middle of the large object;
- peak RSS (VmHWM, reset before each measurement) of every proxy process, and
  its CPU time per GiB moved;
- 16 concurrent 64 MiB PUTs, then GETs: aggregate throughput and peak RSS.

Every client is the same: raw ``http.client`` with SigV4 presigned URLs
(``UNSIGNED-PAYLOAD``, so no client-side hashing), one connection per client,
data generated on the fly (a random 1 MiB block stamped with its index) and
compared with the generator as it arrives, never held whole.

Usage, from the repository root with the test extras installed::

    python -m bench.run [--size 1GiB] [--repeat 3] [--workers 1,2] [--variant NAME:OPTION=VALUE]

Prints a table of rates and ratios, writes ``bench/results/<timestamp>.json``
and, if matplotlib is installed (the ``bench`` extra), a PNG bar chart next to
it. Not a test: the numbers depend on the machine and on whatever else runs on
it (the load average is printed and recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mitmproxy.version
import yaml
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from addons.cli import byte_size
from bench.common import Target, start_passthrough, summarize
from tests.harness import (
    GATEWAY_USER,
    RCLONE_CREDENTIALS,
    REGION,
    Backend,
    Credentials,
    ManagedProcess,
    StartupError,
    child_env,
    child_pids,
    default_gateway_config,
    find_executable,
    free_port,
    http_status,
    make_bucket,
    peak_rss_bytes,
    reset_peak_rss,
    s3_client,
    start_rclone,
    tcp_sockets,
    wait_until,
)
from tests.harness import _start_backend as start_backend_process

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
BLOCK = MIB
SMALL_SIZE = 4 * KIB
CONCURRENT_SIZE = 64 * MIB
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The proxy floors the gateway is compared with: mitmdump as shipped and under -O.
FLOORS = ("mitmdump", "mitmdump-O")
# Issue targets, as ratios (gateway / other) and RSS limits.
TARGETS = {
    "large_vs_mitmdump": 0.8,
    "large_vs_rclone_crypt": 1.0,
    "small_vs_mitmdump": 0.7,
    "rss_large_mib": 200,
    "rss_concurrent_mib": 400,
}


# --------------------------------------------------------------------------- data


class Pattern:
    """Deterministic, incompressible bytes made on the fly: block ``i`` is one random
    1 MiB block with ``i`` in its first 8 bytes. Any byte range can be regenerated."""

    def __init__(self) -> None:
        self._seed = os.urandom(BLOCK)

    def fill(self, index: int, buffer: bytearray) -> None:
        buffer[:] = self._seed
        buffer[:8] = index.to_bytes(8, "big")

    def blocks(self, size: int) -> Iterator[memoryview]:
        """The first ``size`` bytes, one reused 1 MiB buffer at a time."""
        buffer = bytearray(self._seed)
        view = memoryview(buffer)
        for index in range(-(-size // BLOCK)):
            buffer[:8] = index.to_bytes(8, "big")
            yield view[: min(BLOCK, size - index * BLOCK)]

    def slice(self, first: int, last: int) -> bytes:
        """Bytes ``first..last`` (inclusive)."""
        out = bytearray()
        buffer = bytearray(BLOCK)
        for index in range(first // BLOCK, last // BLOCK + 1):
            self.fill(index, buffer)
            start = max(first - index * BLOCK, 0)
            end = min(last + 1 - index * BLOCK, BLOCK)
            out += buffer[start:end]
        return bytes(out)


def check_body(response: http.client.HTTPResponse, pattern: Pattern, size: int) -> None:
    """Read ``size`` bytes into one reused buffer, comparing each block as it arrives."""
    got, expected = bytearray(BLOCK), bytearray(BLOCK)
    view = memoryview(got)
    pattern.fill(0, expected)
    for index in range(-(-size // BLOCK)):
        want = min(BLOCK, size - index * BLOCK)
        filled = 0
        while filled < want:
            read = response.readinto(view[filled:want])
            if not read:
                raise RuntimeError(f"body ended after {index * BLOCK + filled} of {size} bytes")
            filled += read
        expected[:8] = index.to_bytes(8, "big")
        # Whole blocks compare as bytearrays (memcmp); the short last one through views.
        short = view[:want] == memoryview(expected)[:want] if want < BLOCK else None
        if not (got == expected if short is None else short):
            raise RuntimeError(f"block {index} differs from what was stored")
    if response.read(1):
        raise RuntimeError(f"body longer than {size} bytes")


# --------------------------------------------------------------------------- clients


def presign(method: str, url: str, credentials: Credentials, expires: int = 3600) -> str:
    """A SigV4 presigned URL (``UNSIGNED-PAYLOAD``) for ``method`` on ``url``."""
    request = AWSRequest(method=method, url=url)
    boto = BotoCredentials(credentials.access_key_id, credentials.secret_access_key)
    S3SigV4QueryAuth(boto, "s3", REGION, expires=expires).add_auth(request)
    return str(request.url)


def _connection(url: str, timeout: float = 600) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    target = parts.path + ("?" + parts.query if parts.query else "")
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), target


def put_stream(url: str, pattern: Pattern, size: int) -> float:
    """PUT ``size`` generated bytes to a presigned ``url``; seconds until the answer."""
    start = time.perf_counter()
    connection, target = _connection(url)
    try:
        connection.putrequest("PUT", target, skip_accept_encoding=True)
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        for block in pattern.blocks(size):
            connection.send(block)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT {url.split('?')[0]}: {response.status} {body[:300]!r}")
        return time.perf_counter() - start
    finally:
        connection.close()


def get_stream(url: str, pattern: Pattern, size: int) -> float:
    """GET a presigned ``url`` and check its ``size`` bytes on the fly; seconds taken."""
    start = time.perf_counter()
    connection, target = _connection(url)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {url.split('?')[0]}: {response.status} {response.read()!r}")
        check_body(response, pattern, size)
        return time.perf_counter() - start
    finally:
        connection.close()


def run_concurrently(jobs: Sequence[Callable[[], Any]]) -> float:
    """Run ``jobs`` in one thread each, started together; seconds until the last ends."""
    barrier = threading.Barrier(len(jobs) + 1)
    errors: list[BaseException] = []

    def worker(job: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(job,), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def small_ops(endpoint: Endpoint, clients: int, seconds: float, key_prefix: str) -> float:
    """4 KiB PUT then GET in a loop on ``clients`` persistent connections; requests/s."""
    body = os.urandom(SMALL_SIZE)
    counts = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index: int) -> None:
        url = endpoint.object_url(f"{key_prefix}-{index}")
        connection, put_target = _connection(presign("PUT", url, endpoint.creds))
        _, get_target = _connection(presign("GET", url, endpoint.creds))

        def one_round() -> None:
            connection.request("PUT", put_target, body=body)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"small PUT: {response.status} {answer[:300]!r}")
            connection.request("GET", get_target)
            response = connection.getresponse()
            if response.status != 200 or response.read() != body:
                raise RuntimeError(f"small GET: {response.status}")

        try:
            one_round()  # warm-up: connection open, object present
            barrier.wait()
            while not stop.is_set():
                one_round()
                counts[index] += 2
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: raised below
        barrier.wait()
        start = time.perf_counter()
        time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- targets


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Endpoint:
    """One way to reach S3: the backend itself or a proxy in front of it."""

    name: str
    url: str
    creds: Credentials
    bucket: str
    pids: list[int] = field(default_factory=list)  # the proxy's processes (RSS, CPU)

    def path(self, key: str) -> str:
        """Each endpoint writes keys of its own (the backend's bucket is shared)."""
        return f"/{self.bucket}/{self.name}-{key}"

    def object_url(self, key: str) -> str:
        return self.url + self.path(key)

    def reset_peak(self) -> None:
        for pid in self.pids:
            reset_peak_rss(pid)

    def peak_mib(self) -> float:
        """The largest peak RSS of one of the processes since the last reset."""
        return max((peak_rss_bytes(pid) for pid in self.pids), default=0) / MIB

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


@dataclass
class CliGateway:
    """``s3-encryption-gateway run --workers N`` on a fixed loopback port."""

    process: ManagedProcess
    url: str
    workers: list[int]

    def stop(self) -> None:
        self.process.stop()


def start_cli_gateway(
    backend: Backend, work_dir: Path, workers: int, extra: Sequence[str] = ()
) -> CliGateway:
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = default_gateway_config(backend)
    config["listen"] = {"host": "127.0.0.1", "port": port}
    config_path = work_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [find_executable("s3-encryption-gateway"), "run", "--config", str(config_path)]
    # The CLI sets the production options (flow_detail=0, connection_strategy=lazy).
    argv += ["--workers", str(workers), "--set", f"confdir={work_dir / 'mitmproxy'}", *extra]
    process = ManagedProcess(f"gateway-{workers}w", argv, work_dir / "gateway.log", env=child_env())
    url = f"http://127.0.0.1:{port}"

    def ready() -> list[int]:
        process.check_alive()
        pids = child_pids(process.pid) if workers > 1 else [process.pid]
        listening = [
            pid
            for pid in pids
            if any(s.listening and s.local_port == port for s in tcp_sockets(pid))
        ]
        if len(listening) == workers and http_status(url + "/readyz") == 200:
            return pids
        return []

    try:
        pids = wait_until(ready, 30, what=f"gateway with {workers} workers ready")
    except (StartupError, TimeoutError) as error:
        process.stop()
        raise StartupError(f"{error}\n{process.describe()}") from error
    return CliGateway(process, url, pids)


def start_rclone_crypt_over_s3(backend: Backend, work_dir: Path, password: str) -> Backend:
    """rclone's encrypting S3 front on a ``crypt`` remote over an ``s3`` remote that is
    ``backend``: the same two HTTP hops (client -> peer -> backend) as the gateway."""
    work_dir.mkdir(parents=True, exist_ok=True)
    rclone = find_executable("rclone")
    config = work_dir / "rclone.conf"
    obscured = subprocess.run(
        [rclone, "--config", str(config), "obscure", password],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    config.write_text(
        "[backend]\ntype = s3\nprovider = Other\n"
        f"endpoint = {backend.endpoint_url}\naccess_key_id = {backend.access_key_id}\n"
        f"secret_access_key = {backend.secret_access_key}\n\n"
        f"[peer]\ntype = crypt\nremote = backend:\npassword = {obscured}\n"
    )
    auth_key = f"{RCLONE_CREDENTIALS.access_key_id},{RCLONE_CREDENTIALS.secret_access_key}"
    return start_backend_process(
        "rclone-crypt-s3",
        lambda port: [rclone, "serve", "s3", "--config", str(config), "--auth-key", auth_key,
                      "--addr", f"127.0.0.1:{port}", "--log-level", "INFO", "peer:"],
        RCLONE_CREDENTIALS,
        work_dir,
    )  # fmt: skip


# --------------------------------------------------------------------------- statistics


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios a_i / b_i: drift hits both sides of a pair alike."""
    return median([x / y for x, y in zip(a, b, strict=True)]) if a and b else float("nan")


def rotated(items: list[Endpoint], by: int) -> list[Endpoint]:
    by %= len(items)
    return items[by:] + items[:by]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- phases


def phase_large(
    endpoints: list[Endpoint], pattern: Pattern, size: int, repeat: int
) -> dict[str, Any]:
    """PUT then GET of one ``size`` object per endpoint, round-robin, ``repeat`` rounds."""
    results: dict[str, Any] = {
        e.name: {"put_mib_s": [], "get_mib_s": [], "put_rss_mib": [], "get_rss_mib": [],
                 "put_cpu_s_per_gib": [], "get_cpu_s_per_gib": []}
        for e in endpoints
    }  # fmt: skip
    for round_ in range(repeat):
        for endpoint in rotated(endpoints, round_):
            row = results[endpoint.name]
            for method, measure in (("put", put_stream), ("get", get_stream)):
                url = presign(method.upper(), endpoint.object_url("large"), endpoint.creds)
                endpoint.reset_peak()
                cpu = endpoint.cpu()
                seconds = measure(url, pattern, size)
                row[f"{method}_mib_s"].append(size / MIB / seconds)
                row[f"{method}_cpu_s_per_gib"].append((endpoint.cpu() - cpu) * GIB / size)
                row[f"{method}_rss_mib"].append(endpoint.peak_mib())
            print(
                f"  round {round_ + 1} {endpoint.name:<16} PUT {row['put_mib_s'][-1]:7.0f}"
                f"  GET {row['get_mib_s'][-1]:7.0f} MiB/s   load {load()[0]}",
                flush=True,
            )
    return results


def phase_small(
    endpoints: list[Endpoint], clients: int, seconds: float, repeat: int
) -> dict[str, Any]:
    results: dict[str, Any] = {e.name: {"ops_s": [], "rss_mib": []} for e in endpoints}
    for round_ in range(repeat):
        for endpoint in rotated(endpoints, round_):
            endpoint.reset_peak()
            ops = small_ops(endpoint, clients, seconds, "small")
            results[endpoint.name]["ops_s"].append(ops)
            results[endpoint.name]["rss_mib"].append(endpoint.peak_mib())
            print(f"  round {round_ + 1} {endpoint.name:<16} {ops:7.0f} ops/s", flush=True)
    return results


def phase_range(
    endpoints: list[Endpoint], pattern: Pattern, size: int, repetitions: int
) -> dict[str, Any]:
    """TTFB of a 1 MiB range (unaligned, mid-object) of each endpoint's large object."""
    length = min(MIB, size // 2)
    first = min(size // 2 + 12345, size - length)
    last = first + length - 1
    range_header = f"bytes={first}-{last}"
    expected = pattern.slice(first, last)
    targets = {e.name: Target(e.name, e.url, e.creds, e.path("large")) for e in endpoints}
    by_name = {e.name: e for e in endpoints}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for endpoint in endpoints:
        endpoint.reset_peak()
    for index in range(repetitions + 3):  # the first 3 rounds warm up
        order = list(targets.values())
        order = order[index % len(order) :] + order[: index % len(order)]
        for target in order:
            sample, body, headers = target.get(range_header)
            if body != expected or headers.get("content-range") != f"bytes {first}-{last}/{size}":
                raise RuntimeError(f"{target.name}: wrong range answer {headers}")
            if index >= 3:
                samples[target.name].append(sample.ttfb)
    for target in targets.values():
        target.close()
    return {
        "range": range_header,
        "results": {
            name: {**summarize(values), "rss_mib": by_name[name].peak_mib()}
            for name, values in samples.items()
        },
    }


def phase_concurrent(
    endpoints: list[Endpoint], pattern: Pattern, clients: int, size: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for endpoint in endpoints:
        keys = [f"concurrent-{i}" for i in range(clients)]
        endpoint.reset_peak()
        puts = [
            partial(
                put_stream, presign("PUT", endpoint.object_url(k), endpoint.creds), pattern, size
            )
            for k in keys
        ]
        put_seconds = run_concurrently(puts)
        put_rss = endpoint.peak_mib()
        endpoint.reset_peak()
        gets = [
            partial(
                get_stream, presign("GET", endpoint.object_url(k), endpoint.creds), pattern, size
            )
            for k in keys
        ]
        get_seconds = run_concurrently(gets)
        total = clients * size / MIB
        results[endpoint.name] = {
            "put_mib_s": total / put_seconds,
            "get_mib_s": total / get_seconds,
            "put_rss_mib": put_rss,
            "get_rss_mib": endpoint.peak_mib(),
        }
        r = results[endpoint.name]
        print(
            f"  {endpoint.name:<16} PUT {r['put_mib_s']:7.0f}  GET {r['get_mib_s']:7.0f} MiB/s"
            f"  peak RSS {max(r['put_rss_mib'], r['get_rss_mib']):5.0f} MiB",
            flush=True,
        )
    return results


# --------------------------------------------------------------------------- report


def summarize_run(data: dict[str, Any], gateways: list[str]) -> dict[str, Any]:
    large, small, ranged = data["large"], data["small"], data["range"]["results"]
    summary: dict[str, Any] = {}
    for gateway in gateways:
        ratios = {}
        for method in ("put", "get"):
            mine = large[gateway][f"{method}_mib_s"]
            for floor in FLOORS:
                ratios[f"large_{method}_vs_{floor}"] = paired_ratio(
                    mine, large[floor][f"{method}_mib_s"]
                )
            for peer in ("rclone-crypt", "rclone-crypt-s3"):
                if peer in large:
                    ratios[f"large_{method}_vs_{peer.replace('-', '_')}"] = paired_ratio(
                        mine, large[peer][f"{method}_mib_s"]
                    )
        for floor in FLOORS:
            ratios[f"small_ops_vs_{floor}"] = paired_ratio(
                small[gateway]["ops_s"], small[floor]["ops_s"]
            )
            ratios[f"range_ttfb_median_vs_{floor}"] = (
                ranged[gateway]["median_ms"] / ranged[floor]["median_ms"]
            )
        rss_large = max(large[gateway]["put_rss_mib"] + large[gateway]["get_rss_mib"])
        conc = data["concurrent"].get(gateway)
        rss_conc = max(conc["put_rss_mib"], conc["get_rss_mib"]) if conc else float("nan")
        met = {
            "large_vs_mitmdump": min(ratios["large_put_vs_mitmdump"],
                                     ratios["large_get_vs_mitmdump"])
            >= TARGETS["large_vs_mitmdump"],
            "small_vs_mitmdump": ratios["small_ops_vs_mitmdump"] >= TARGETS["small_vs_mitmdump"],
            "rss_large": rss_large < TARGETS["rss_large_mib"],
            "rss_concurrent": rss_conc < TARGETS["rss_concurrent_mib"],
        }  # fmt: skip
        if "large_put_vs_rclone_crypt" in ratios:
            met["large_vs_rclone_crypt"] = (
                min(ratios["large_put_vs_rclone_crypt"], ratios["large_get_vs_rclone_crypt"])
                >= TARGETS["large_vs_rclone_crypt"]
            )
        summary[gateway] = {
            "ratios": ratios,
            "peak_rss_large_mib": rss_large,
            "peak_rss_concurrent_mib": rss_conc,
            "targets_met": met,
        }
    return summary


def print_report(data: dict[str, Any], gateways: list[str]) -> None:
    large, small, ranged = data["large"], data["small"], data["range"]["results"]
    conc = data["concurrent"]
    size_mib = data["config"]["size"] / MIB
    print(f"\n=== large objects: {size_mib:.0f} MiB, median of {data['config']['repeat']} ===")
    print(f"{'target':<16} {'PUT MiB/s':>10} {'GET MiB/s':>10} {'PUT cpu s/GiB':>14}"
          f" {'GET cpu s/GiB':>14} {'peak RSS MiB':>13}")  # fmt: skip
    for name, row in large.items():
        rss = max(row["put_rss_mib"] + row["get_rss_mib"], default=0)
        cpu = (
            f" {median(row['put_cpu_s_per_gib']):14.2f} {median(row['get_cpu_s_per_gib']):14.2f}"
            f" {rss:13.0f}"
            if rss  # the direct path has no proxy process to watch
            else f" {'-':>14} {'-':>14} {'-':>13}"
        )
        print(f"{name:<16} {median(row['put_mib_s']):10.0f} {median(row['get_mib_s']):10.0f}{cpu}")
    clients = data["config"]["clients"]
    print(f"\n=== 4 KiB PUT+GET, {clients} clients: requests/s, median ===")
    for name, row in small.items():
        rss = max(row["rss_mib"], default=0)
        shown = f"   peak RSS {rss:5.0f} MiB" if rss else ""
        print(f"{name:<16} {median(row['ops_s']):10.0f}{shown}")
    print(f"\n=== ranged GET {data['range']['range']}: time to first byte (ms) ===")
    for name, row in ranged.items():
        print(f"{name:<16} median {row['median_ms']:7.2f}   p90 {row['p90_ms']:7.2f}")
    print(f"\n=== {clients} concurrent {CONCURRENT_SIZE // MIB} MiB transfers ===")
    for name, row in conc.items():
        print(
            f"{name:<16} PUT {row['put_mib_s']:7.0f}  GET {row['get_mib_s']:7.0f} MiB/s"
            f"   peak RSS PUT {row['put_rss_mib']:5.0f}  GET {row['get_rss_mib']:5.0f} MiB"
        )
    print("\n=== ratios (median of per-round ratios) and issue targets ===")
    for gateway in gateways:
        s = data["summary"][gateway]
        r, met = s["ratios"], s["targets_met"]

        def mark(ok: bool) -> str:
            return "ok" if ok else "MISSED"

        print(f"{gateway}:")
        print(
            f"  large PUT/GET vs mitmdump      {r['large_put_vs_mitmdump']:.2f} /"
            f" {r['large_get_vs_mitmdump']:.2f}   (>= 0.8: {mark(met['large_vs_mitmdump'])})"
        )
        print(
            f"  ... vs mitmdump under -O       {r['large_put_vs_mitmdump-O']:.2f} /"
            f" {r['large_get_vs_mitmdump-O']:.2f}"
        )
        if "large_put_vs_rclone_crypt" in r:
            print(
                f"  large PUT/GET vs rclone crypt  {r['large_put_vs_rclone_crypt']:.2f} /"
                f" {r['large_get_vs_rclone_crypt']:.2f}"
                f"   (>= 1.0: {mark(met['large_vs_rclone_crypt'])})"
            )
        if "large_put_vs_rclone_crypt_s3" in r:
            print(
                f"  ... vs rclone crypt over S3    {r['large_put_vs_rclone_crypt_s3']:.2f} /"
                f" {r['large_get_vs_rclone_crypt_s3']:.2f}   (same hops as the gateway)"
            )
        print(
            f"  small ops vs mitmdump          {r['small_ops_vs_mitmdump']:.2f}"
            f"          (>= 0.7: {mark(met['small_vs_mitmdump'])})"
        )
        print(f"  ... vs mitmdump under -O       {r['small_ops_vs_mitmdump-O']:.2f}")
        print(f"  range TTFB vs mitmdump         {r['range_ttfb_median_vs_mitmdump']:.2f}")
        print(f"  ... vs mitmdump under -O       {r['range_ttfb_median_vs_mitmdump-O']:.2f}")
        print(
            f"  peak RSS, large object         {s['peak_rss_large_mib']:.0f} MiB"
            f"     (< 200: {mark(met['rss_large'])})"
        )
        print(
            f"  peak RSS, {clients} x {CONCURRENT_SIZE // MIB} MiB          "
            f"{s['peak_rss_concurrent_mib']:.0f} MiB     (< 400: {mark(met['rss_concurrent'])})"
        )
    env = data["environment"]
    print(
        f"\nload average before {env['load_average_before']}, after"
        f" {env['load_average_after']} on {env['cpus']} CPUs; run took"
        f" {env['run_seconds']:.0f} s"
    )


def plot(data: dict[str, Any], path: Path) -> bool:
    """A PNG bar chart of the run, if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    large, small, ranged = data["large"], data["small"], data["range"]["results"]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    names = list(large)
    x = range(len(names))
    ax = axes[0][0]
    ax.bar([i - 0.2 for i in x], [median(large[n]["put_mib_s"]) for n in names], 0.4, label="PUT")
    ax.bar([i + 0.2 for i in x], [median(large[n]["get_mib_s"]) for n in names], 0.4, label="GET")
    ax.set_title(f"{data['config']['size'] // MIB} MiB object (MiB/s)")
    ax.set_xticks(list(x), names, rotation=20)
    ax.legend()
    ax = axes[0][1]
    ax.bar(list(small), [median(small[n]["ops_s"]) for n in small])
    ax.set_title(f"4 KiB PUT+GET, {data['config']['clients']} clients (requests/s)")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[1][0]
    ax.bar(list(ranged), [ranged[n]["median_ms"] for n in ranged])
    ax.set_title("1 MiB range: median time to first byte (ms)")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[1][1]
    proxies = [n for n in names if max(large[n]["put_rss_mib"], default=0)]
    conc = data["concurrent"]
    ax.bar(
        [i - 0.2 for i in range(len(proxies))],
        [max(large[n]["put_rss_mib"] + large[n]["get_rss_mib"]) for n in proxies],
        0.4,
        label="one large object",
    )
    ax.bar(
        [i + 0.2 for i in range(len(proxies))],
        [max(conc[n]["put_rss_mib"], conc[n]["get_rss_mib"]) if n in conc else 0
         for n in proxies],
        0.4,
        label=f"{data['config']['clients']} x {CONCURRENT_SIZE // MIB} MiB",
    )  # fmt: skip
    ax.set_title("peak RSS per process (MiB)")
    ax.set_xticks(list(range(len(proxies))), proxies, rotation=20)
    ax.legend()
    env = data["environment"]
    figure.suptitle(
        f"{data['timestamp']}  load {env['load_average_before']} -> {env['load_average_after']}"
        f"  ({env['cpus']} CPUs)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=byte_size, default=GIB, help="large object (1GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement (3)")
    parser.add_argument("--workers", default="1,2", help="gateway worker counts to measure (1,2)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument(
        "--small-seconds", type=float, default=4.0, help="length of one small-object run (4)"
    )
    parser.add_argument("--ranges", type=int, default=30, help="timed ranged GETs per target (30)")
    parser.add_argument("--no-peer", action="store_true", help="skip the rclone crypt peers")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:OPTION=VALUE[,OPTION=VALUE]",
        help="also measure a 1-worker gateway run with these options, named gateway-NAME"
        " (e.g. full:gw_lean=false for ADR 0009's effect, small-reads:gw_read_size=65535)",
    )
    parser.add_argument(
        "--backend-md5",
        action="store_true",
        help="let the backend compute MD5 ETags (rclone's default: it reads each object twice)",
    )
    parser.add_argument("--json", type=Path, help="result file (bench/results/<timestamp>.json)")
    args = parser.parse_args()
    worker_counts = sorted({int(n) for n in args.workers.split(",") if n.strip()})
    if not worker_counts or min(worker_counts) < 1:
        parser.error("--workers: a comma-separated list of counts >= 1")

    timestamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = args.json or RESULTS_DIR / f"{timestamp}.json"
    load_before = load()
    started = time.perf_counter()
    print(f"load average {load_before} on {os.cpu_count()} CPUs", flush=True)

    work = Path(tempfile.mkdtemp(prefix="s3gw-bench-"))
    stoppable: list[Any] = []
    try:
        data_dir = work / "data"
        # rclone's local backend hashes every object for its MD5 ETag, reading it
        # twice per GET; the crypt peer has no hashes. Off, neither side pays for it.
        etag = [] if args.backend_md5 else ["--etag-hash="]
        backend = start_rclone(work / "rclone", data_dir, extra_args=etag)
        stoppable.append(backend)
        passthrough = start_passthrough("mitmdump", backend.endpoint_url, work / "mitmdump", [])
        stoppable.append(passthrough)
        optimized = start_passthrough(
            "mitmdump-O", backend.endpoint_url, work / "mitmdump-O", [], optimized=True
        )
        stoppable.append(optimized)
        gateways: dict[str, CliGateway] = {}
        for count in worker_counts:
            name = "gateway" if count == 1 else f"gateway-{count}w"
            gateways[name] = start_cli_gateway(backend, work / name, count)
            stoppable.append(gateways[name])
        for variant in args.variant:  # the same gateway with other options, side by side
            label, _, options = variant.partition(":")
            name = f"gateway-{label}"
            sets = [arg for option in options.split(",") for arg in ("--set", option.strip())]
            gateways[name] = start_cli_gateway(backend, work / name, 1, sets)
            stoppable.append(gateways[name])
        bucket = make_bucket(backend, prefix="bench")
        endpoints = [
            Endpoint("direct", backend.endpoint_url, backend.credentials, bucket),
            Endpoint("mitmdump", passthrough.url, backend.credentials, bucket, [passthrough.pid]),
            Endpoint("mitmdump-O", optimized.url, backend.credentials, bucket, [optimized.pid]),
        ]
        for name, gateway in gateways.items():
            endpoints.append(Endpoint(name, gateway.url, GATEWAY_USER, bucket, gateway.workers))
        if not args.no_peer:
            password = os.urandom(16).hex()
            crypt = start_rclone(work / "rclone-crypt", data_dir, crypt_password=password)
            stoppable.append(crypt)
            s3_client(crypt.endpoint_url, crypt.credentials).create_bucket(Bucket=bucket)
            endpoints.append(
                Endpoint("rclone-crypt", crypt.endpoint_url, crypt.credentials, bucket,
                         [crypt.process.pid])
            )  # fmt: skip
            # The same peer in front of the backend over S3, as the gateway is.
            crypt_s3 = start_rclone_crypt_over_s3(backend, work / "rclone-crypt-s3", password)
            stoppable.append(crypt_s3)
            s3_client(crypt_s3.endpoint_url, crypt_s3.credentials).create_bucket(Bucket=bucket)
            endpoints.append(
                Endpoint("rclone-crypt-s3", crypt_s3.endpoint_url, crypt_s3.credentials, bucket,
                         [crypt_s3.process.pid])
            )  # fmt: skip
        pattern = Pattern()

        print(f"\nlarge objects ({args.size / MIB:.0f} MiB), {args.repeat} rounds", flush=True)
        large = phase_large(endpoints, pattern, args.size, args.repeat)
        print(f"\nsmall objects, {args.clients} clients, {args.repeat} rounds", flush=True)
        small = phase_small(endpoints, args.clients, args.small_seconds, args.repeat)
        print("\nranged GETs", flush=True)
        ranged = phase_range(endpoints, pattern, args.size, args.ranges)
        print(f"\n{args.clients} concurrent {CONCURRENT_SIZE // MIB} MiB transfers", flush=True)
        concurrent = phase_concurrent(
            [e for e in endpoints if e.pids], pattern, args.clients, CONCURRENT_SIZE
        )
    finally:
        for process in reversed(stoppable):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)

    data: dict[str, Any] = {
        "timestamp": timestamp,
        "config": {
            "size": args.size,
            "repeat": args.repeat,
            "clients": args.clients,
            "small_object": SMALL_SIZE,
            "small_seconds": args.small_seconds,
            "concurrent_object": CONCURRENT_SIZE,
            "range_repetitions": args.ranges,
            "workers": worker_counts,
            "client": "http.client, SigV4 presigned URLs (UNSIGNED-PAYLOAD), streamed",
            "backend": "rclone serve s3 over a local directory"
            + (" (MD5 ETags)" if args.backend_md5 else " (--etag-hash= : no ETag hashing)"),
            "peers": {
                "rclone-crypt": "rclone serve s3 on a crypt remote over the same directory",
                "rclone-crypt-s3": "rclone serve s3 on a crypt remote over an s3 remote (backend)",
            },
        },
        "large": large,
        "small": small,
        "range": ranged,
        "concurrent": concurrent,
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load(),
            "python": platform.python_version(),
            "mitmproxy": mitmproxy.version.VERSION,
            "machine": platform.machine(),
            "run_seconds": time.perf_counter() - started,
        },
    }
    data["summary"] = summarize_run(data, list(gateways))
    print_report(data, list(gateways))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"results: {json_path}")
    png = json_path.with_suffix(".png")
    if plot(data, png):
        print(f"chart:   {png}")
    else:
        print("chart:   skipped (matplotlib is not installed; pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())

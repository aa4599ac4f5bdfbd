"""Pieces the benchmarks share: a plain mitmdump passthrough, ranged-GET timing, statistics."""

from __future__ import annotations

import http.client
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness import Credentials, ManagedProcess, child_env, find_executable, wait_until
from tests.rawclient import sign

# Production settings (see addons/cli.py) for every proxy, so the paths differ only
# in the addons: no per-flow console output, upstream connected on demand.
QUIET = ["--set", "flow_detail=0", "--set", "connection_strategy=lazy"]
# `s3-encryption-gateway run` starts mitmproxy under python -O (ADR 0011); a
# plain mitmdump is measured both ways, as shipped and under -O.
OPTIMIZED = {"PYTHONOPTIMIZE": "1"}
_LISTENING = re.compile(r"listening at (?:\[[^\]]+\]|[^\s:]+):(\d+)")


# --------------------------------------------------------------------------- processes


@dataclass
class Proxy:
    """A plain ``mitmdump --mode reverse:`` with no addons."""

    process: ManagedProcess
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()


def start_passthrough(
    name: str, upstream: str, work_dir: Path, extra: list[str], *, optimized: bool = False
) -> Proxy:
    work_dir.mkdir(parents=True, exist_ok=True)
    found = threading.Event()
    ports: list[int] = []

    def on_line(line: str) -> None:
        match = _LISTENING.search(line)
        if match and not found.is_set():
            ports.append(int(match[1]))
            found.set()

    argv = [
        find_executable("mitmdump"),
        "--mode",
        f"reverse:{upstream}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "--set",
        f"confdir={work_dir / 'mitmproxy'}",
        # Clients sign the Host header they send; the backend must see it unchanged.
        "--set",
        "keep_host_header=true",
        # Forward bodies as they arrive instead of buffering them, as the gateway does.
        "--set",
        "stream_large_bodies=1",
        *QUIET,
        *extra,
    ]
    env = child_env(**(OPTIMIZED if optimized else {}))
    process = ManagedProcess(name, argv, work_dir / f"{name}.log", env=env, on_line=on_line)

    def listening() -> bool:
        process.check_alive()
        return found.wait(0.05)

    try:
        wait_until(listening, 30, interval=0, what=f"{name} listening")
    except BaseException:
        process.stop()
        raise
    return Proxy(process, f"http://127.0.0.1:{ports[0]}")


# --------------------------------------------------------------------------- ranged GETs


@dataclass(frozen=True)
class Sample:
    ttfb: float  # request sent -> first body byte received
    headers: float  # request sent -> status line and headers parsed
    total: float  # request sent -> last body byte received
    # request sent -> the first ``first_piece`` body bytes received (see Target.get)
    first_piece: float


class Target:
    """One endpoint read over a persistent connection (as SDK clients do)."""

    def __init__(self, name: str, url: str, credentials: Credentials, path: str) -> None:
        self.name = name
        self.url = url
        self.credentials = credentials
        self.path = path
        self._connection: http.client.HTTPConnection | None = None

    def get(self, range_header: str, first_piece: int = 1) -> tuple[Sample, bytes, dict[str, str]]:
        """GET with ``range_header``, timing the first byte and the first ``first_piece`` bytes.

        A gateway that verifies each AEAD chunk before releasing it can send its
        first byte no earlier than a passthrough delivers the end of that chunk:
        ``first_piece`` set to the plaintext up to the first chunk boundary makes the
        passthrough's ``Sample.first_piece`` that floor.
        """
        full_url = self.url + self.path
        headers = sign("GET", full_url, self.credentials, headers=[("Range", range_header)])
        if self._connection is None:
            parts = urlsplit(self.url)
            assert parts.hostname is not None and parts.port is not None
            self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            self._connection.connect()
        connection = self._connection
        start = time.perf_counter()
        connection.putrequest("GET", self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        got_headers = time.perf_counter()
        first = response.read(1)
        got_first = time.perf_counter()
        piece = response.read(first_piece - 1) if first_piece > 1 else b""
        got_piece = time.perf_counter()
        rest = response.read()
        done = time.perf_counter()
        response_headers = {name.lower(): value for name, value in response.getheaders()}
        if response.will_close:
            self.close()
        return (
            Sample(got_first - start, got_headers - start, done - start, got_piece - start),
            first + piece + rest,
            response_headers,
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# --------------------------------------------------------------------------- statistics


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": statistics.quantiles(ordered, n=10, method="inclusive")[8] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "min_ms": ordered[0] * 1000,
        "max_ms": ordered[-1] * 1000,
    }

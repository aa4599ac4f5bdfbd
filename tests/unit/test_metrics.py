"""The Metrics addon: what each kind of request counts, bounded labels, the endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import tflow

from addons.metrics import OTHER_BUCKET, Metrics
from crypto.sizes import ciphertext_length
from tests.harness import free_port
from tests.unit.chain import CHUNK, Chain, MemoryS3, gateway_chain, signed

DATA = bytes(range(256)) * 20  # 5120 bytes
LARGE = bytes(1536 * 1024)  # streamed through the encryptor (over 1 MiB)


@contextmanager
def metrics_chain(tmp_path: Path, **options: Any) -> Iterator[tuple[Chain, Metrics]]:
    with gateway_chain(tmp_path, [Metrics], options=options) as chain:
        metrics = chain.addons[-1]
        assert isinstance(metrics, Metrics)
        try:
            yield chain, metrics
        finally:
            metrics.done()


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_requests_bytes_and_crypto_are_counted(tmp_path: Path) -> None:
    with metrics_chain(tmp_path) as (chain, metrics):
        backend = MemoryS3()
        chain.send(signed("PUT", "/bucket/small", DATA), backend)
        chain.send(signed("PUT", "/bucket/large", LARGE), backend)
        _, body = chain.send(
            signed("GET", "/bucket/small", headers={"Range": "bytes=0-99"}), backend
        )
        assert body == DATA[:100]
        chain.send(signed("HEAD", "/bucket/missing"), backend)

        put = {"operation": "PutObject", "bucket": OTHER_BUCKET}
        assert value(metrics, "s3gw_requests_total", status_class="2xx", **put) == 2
        assert value(metrics, "s3gw_request_duration_seconds_count", status_class="2xx", **put) == 2
        assert value(metrics, "s3gw_request_bytes_total", **put) == len(DATA) + len(LARGE)
        get = {"operation": "GetObject", "bucket": OTHER_BUCKET}
        assert value(metrics, "s3gw_requests_total", status_class="2xx", **get) == 1
        assert value(metrics, "s3gw_response_bytes_total", **get) == 100
        head = {"operation": "HeadObject", "bucket": OTHER_BUCKET, "status_class": "4xx"}
        assert value(metrics, "s3gw_requests_total", **head) == 1

        encrypted = len(DATA) + len(LARGE)
        assert value(metrics, "s3gw_crypto_bytes_total", direction="encrypt", side="plaintext") == (
            encrypted
        )
        assert value(
            metrics, "s3gw_crypto_bytes_total", direction="encrypt", side="ciphertext"
        ) == ciphertext_length(len(DATA), CHUNK) + ciphertext_length(len(LARGE), CHUNK)
        assert value(metrics, "s3gw_crypto_chunks_total", direction="encrypt") == (
            len(DATA) // CHUNK + len(LARGE) // CHUNK
        )
        assert (
            value(metrics, "s3gw_crypto_bytes_total", direction="decrypt", side="plaintext") == 100
        )
        assert value(metrics, "s3gw_crypto_chunks_total", direction="decrypt") == 1
        assert value(metrics, "s3gw_requests_in_flight") == 0
        pools = [
            s
            for m in metrics.registry.collect()
            if m.name == "s3gw_buffer_pool_misses"
            for s in m.samples
        ]
        assert pools and all(s.labels["buffer_size"].isdigit() for s in pools)


def test_auth_failures_and_backend_errors(tmp_path: Path) -> None:
    with metrics_chain(tmp_path) as (chain, metrics):
        chain.send(signed("GET", "/bucket/k", secret="wrong"), MemoryS3())
        chain.send(signed("GET", "/bucket/k"), backend=None)  # backend unreachable
        chain.send(signed("GET", "/bucket/k"), lambda request: _status(503))
        assert value(metrics, "s3gw_auth_failures_total", code="SignatureDoesNotMatch") == 1
        assert value(metrics, "s3gw_backend_errors_total", reason="unreachable") == 1
        assert value(metrics, "s3gw_backend_errors_total", reason="status_5xx") == 1
        get = {"operation": "GetObject", "bucket": OTHER_BUCKET}
        assert value(metrics, "s3gw_requests_total", status_class="4xx", **get) == 1
        assert value(metrics, "s3gw_requests_total", status_class="aborted", **get) == 1
        assert value(metrics, "s3gw_requests_total", status_class="5xx", **get) == 1


def _status(status: int) -> http.Response:
    return http.Response.make(status, b"<Error><Code>SlowDown</Code></Error>")


def test_tampered_object_counts_a_decrypt_failure(tmp_path: Path) -> None:
    with metrics_chain(tmp_path) as (chain, metrics):
        backend = MemoryS3()
        chain.send(signed("PUT", "/bucket/k", DATA), backend)
        data, meta = backend.objects["/bucket/k"]
        backend.objects["/bucket/k"] = (data[:-1] + bytes([data[-1] ^ 1]), meta)
        flow, _ = chain.send(signed("GET", "/bucket/k"), backend)
        assert flow.error is not None
        assert (
            value(
                metrics,
                "s3gw_crypto_failures_total",
                direction="decrypt",
                reason="ConnectionAborted",
            )
            == 1
        )
        assert value(metrics, "s3gw_crypto_bytes_total", direction="decrypt", side="plaintext") == 0


def test_bucket_label_only_for_allowed_buckets(tmp_path: Path) -> None:
    with metrics_chain(tmp_path, gw_metrics_buckets=["public"]) as (chain, metrics):
        backend = MemoryS3()
        for bucket in ("public", "private", "other-private"):
            chain.send(signed("HEAD", f"/{bucket}/key"), backend)
        chain.send(signed("GET", "/"), lambda request: _status(200))  # ListBuckets: no bucket
        labels = {
            s.labels.get("bucket")
            for m in metrics.registry.collect()
            for s in m.samples
            if "bucket" in s.labels
        }
        assert labels == {"public", OTHER_BUCKET, ""}


def test_operation_label_is_bounded() -> None:
    from addons.observe import operation_label
    from addons.s3.ops import Action, S3Operation

    weird = S3Operation("Get Object\n{x}", Action.PASS, "b", "k", ())
    assert operation_label(weird) == "Unknown"


def test_in_flight_and_lost_flows(tmp_path: Path) -> None:
    with metrics_chain(tmp_path) as (chain, metrics):
        flow = tflow.tflow(req=signed("HEAD", "/bucket/k"))
        chain.hook("requestheaders", flow)
        assert value(metrics, "s3gw_requests_in_flight") == 1
        flow.live = False  # the connection died and no hook followed
        chain.send(signed("HEAD", "/bucket/k"), MemoryS3())
        assert value(metrics, "s3gw_requests_in_flight") == 0


def test_endpoint_serves_the_registry_and_stops(tmp_path: Path) -> None:
    port = free_port()
    with metrics_chain(tmp_path, gw_metrics_port=port, gw_metrics_host="127.0.0.1") as (
        chain,
        metrics,
    ):
        assert metrics.url is None  # not before running
        metrics.running()
        assert metrics.url == f"http://127.0.0.1:{port}/metrics"
        chain.send(signed("HEAD", "/bucket/k"), MemoryS3())
        with urllib.request.urlopen(metrics.url, timeout=5) as answer:
            text = answer.read().decode()
        assert (
            's3gw_requests_total{bucket="_other",operation="HeadObject",status_class="4xx"} 1.0'
            in text
        )
        assert "process_resident_memory_bytes" in text
        metrics.done()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_yaml_port_and_bad_port(tmp_path: Path) -> None:
    port = free_port()
    with gateway_chain(tmp_path, [Metrics], observability={"metrics_port": port}) as chain:
        metrics = chain.addons[-1]
        assert isinstance(metrics, Metrics)
        metrics.running()
        try:
            assert metrics.url is not None and metrics.url.endswith(f":{port}/metrics")
        finally:
            metrics.done()
    with pytest.raises(exceptions.OptionsError), metrics_chain(tmp_path, gw_metrics_port=70000):
        pass

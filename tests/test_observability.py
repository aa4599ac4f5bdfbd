"""Metrics, traces and access logs of the real gateway process.

The metrics endpoint is scraped after a load over many distinct keys to show
that the number of series does not grow with them; traces go over OTLP/HTTP to
a receiver this test runs; the access log is read from the gateway's output.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    GATEWAY_USER,
    Backend,
    Credentials,
    GatewayFactory,
    free_port,
    make_bucket,
    wait_until,
)

LOAD_REQUESTS = 1000
# Well above what the gateway exports (about 80 series, with the process and GC
# collectors), far below one series per key.
MAX_SERIES = 400


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


def series(exposition: str) -> list[str]:
    return [line for line in exposition.splitlines() if line and not line.startswith("#")]


def sample(exposition: str, name: str, **labels: str) -> float:
    for line in series(exposition):
        metric, _, number = line.rpartition(" ")
        if not metric.startswith(name + "{") and metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(number)
    return 0.0


def test_metric_series_stay_bounded_under_many_keys(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    port = free_port()
    gateway = gateway_factory(moto_backend, {"observability": {"metrics_port": port}})
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: scrape(url), 10, what="metrics endpoint")
    bucket = make_bucket(moto_backend)
    client = gateway.client()
    client.put_object(Bucket=bucket, Key="present", Body=b"x" * 1000)
    before = series(scrape(url))

    def head(i: int) -> int:
        try:
            client.head_object(Bucket=bucket, Key=f"load/key-{i:04d}-unique")
        except ClientError as error:
            return int(error.response["ResponseMetadata"]["HTTPStatusCode"])
        return 200

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(head, range(LOAD_REQUESTS)))
    elapsed = time.monotonic() - started
    assert statuses == [404] * LOAD_REQUESTS

    exposition = scrape(url)
    after = series(exposition)
    assert len(after) < MAX_SERIES, f"{len(after)} series after {LOAD_REQUESTS} keys"
    assert len(after) - len(before) < 50  # a few new label sets (HeadObject 4xx), not per key
    assert "key-0" not in exposition and "unique" not in exposition and bucket not in exposition
    labels = {"operation": "HeadObject", "status_class": "4xx", "bucket": "_other"}
    assert sample(exposition, "s3gw_requests_total", **labels) == LOAD_REQUESTS
    assert sample(exposition, "s3gw_request_duration_seconds_count", **labels) == LOAD_REQUESTS
    assert sample(exposition, "s3gw_requests_in_flight") == 0
    assert (
        sample(exposition, "s3gw_crypto_bytes_total", direction="encrypt", side="plaintext") >= 1000
    )
    print(f"{LOAD_REQUESTS} HEADs in {elapsed:.1f}s; {len(after)} series")


# --------------------------------------------------------------------------- OTLP


@dataclass
class OtlpReceiver:
    """A local OTLP/HTTP trace receiver: records every POST to /v1/traces."""

    posts: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.posts.append((self.path, self.headers.get("content-type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def spans(self) -> list[Any]:
        """Every span received, decoded (opentelemetry-proto is installed with the exporter)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found = []
        with self.lock:
            posts = list(self.posts)
        for path, content_type, body in posts:
            assert path == "/v1/traces" and content_type == "application/x-protobuf"
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    found.extend(scope_spans.spans)
        return found


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, int]]:
    receiver = OtlpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_traces_reach_an_otlp_http_receiver_and_logs_name_them(
    moto_backend: Backend,
    gateway_factory: GatewayFactory,
    otlp_receiver: tuple[OtlpReceiver, int],
) -> None:
    receiver, port = otlp_receiver
    overrides = {
        "observability": {
            "tracing_exporter": "otlp-http",
            "tracing_endpoint": f"http://127.0.0.1:{port}/v1/traces",
            "access_log": "-",
            "access_log_format": "json",
        }
    }
    gateway = gateway_factory(moto_backend, overrides)
    mark = gateway.log_mark()
    bucket = make_bucket(moto_backend)
    client = gateway.client()
    data = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB chunks
    client.put_object(Bucket=bucket, Key="traced/object", Body=data)
    got = client.get_object(Bucket=bucket, Key="traced/object", Range="bytes=70000-140000")
    assert got["Body"].read() == data[70000:140001]
    stranger = gateway.client(Credentials(GATEWAY_USER.access_key_id, "not-the-secret"))
    with pytest.raises(ClientError):
        stranger.get_object(Bucket=bucket, Key="traced/object")

    wanted = {"s3.PutObject", "s3.GetObject", "s3gw.backend", "s3gw.encrypt", "s3gw.decrypt"}

    def all_spans_arrived() -> list[Any] | None:
        spans = receiver.spans()
        names = [s.name for s in spans]
        return spans if wanted <= set(names) and names.count("s3.GetObject") >= 2 else None

    # The batch processor exports every few seconds.
    spans = wait_until(all_spans_arrived, 30, interval=0.5, what="spans at the receiver")
    by_id = {s.span_id: s for s in spans}
    put = next(s for s in spans if s.name == "s3.PutObject")
    encrypt = next(s for s in spans if s.name == "s3gw.encrypt")
    assert by_id[encrypt.parent_span_id] is put and encrypt.trace_id == put.trace_id
    encrypt_attributes = {a.key: a.value.int_value for a in encrypt.attributes}
    assert encrypt_attributes["s3gw.crypto.plaintext_bytes"] == len(data)
    assert encrypt_attributes["s3gw.crypto.chunks"] == 4
    decrypt = next(s for s in spans if s.name == "s3gw.decrypt")
    ranged_get = by_id[decrypt.parent_span_id]
    assert ranged_get.name == "s3.GetObject"
    decrypt_attributes = {a.key: a.value.int_value for a in decrypt.attributes}
    assert decrypt_attributes["s3gw.crypto.plaintext_bytes"] == 140001 - 70000
    assert decrypt_attributes["s3gw.crypto.chunks"] == 2
    refused = [
        s
        for s in spans
        if s.name == "s3.GetObject"
        and any(
            a.key == "error.type" and a.value.string_value == "SignatureDoesNotMatch"
            for a in s.attributes
        )
    ]
    assert len(refused) == 1
    assert not any(by_id.get(s.parent_span_id) is refused[0] for s in spans)  # nothing forwarded

    # The access log names the same traces.
    gateway.wait_for_output(r'"operation":"GetObject"[^\n]*"status":403', since=mark)
    entries = [
        json.loads(line)
        for line in gateway.output(mark).splitlines()
        if line.startswith("{") and '"request_id"' in line
    ]
    put_entry = next(e for e in entries if e["operation"] == "PutObject")
    assert put_entry["trace_id"] == put.trace_id.hex()
    assert put_entry["bytes_in"] == len(data) and put_entry["encryption"] == "s3g1"
    assert "not-the-secret" not in gateway.output(mark)


def test_spans_still_buffered_are_flushed_on_shutdown(
    moto_backend: Backend,
    gateway_factory: GatewayFactory,
    otlp_receiver: tuple[OtlpReceiver, int],
) -> None:
    receiver, port = otlp_receiver
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    overrides = {"observability": {"tracing_exporter": "otlp-http", "tracing_endpoint": endpoint}}
    gateway = gateway_factory(moto_backend, overrides, fresh=True)
    bucket = make_bucket(moto_backend)
    gateway.client().put_object(Bucket=bucket, Key="k", Body=b"last words")
    gateway.stop()  # well before the batch processor's next export
    assert {"s3.PutObject", "s3gw.backend", "s3gw.encrypt"} <= {s.name for s in receiver.spans()}

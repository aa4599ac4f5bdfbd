"""Prometheus metrics on a port of their own (``gw_metrics_port``; off by default).

Labels have a bounded set of values: operation names, status classes, error
codes the gateway knows, and a bucket label that is the bucket's name only for
buckets in the ``gw_metrics_buckets`` allow-list. Object keys never become
labels. Byte counts are the Content-Length headers of the request and the
response as the client saw them: streamed bodies are not wrapped to be counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from addons.config import Config
from addons.flowstate import FlowState, state_of
from addons.observe import (
    backend_error,
    bounded_code,
    crypto_stats,
    finish_once,
    is_auth_failure,
    observability,
    operation_label,
    outcome,
)
from crypto import shared_pool_stats

log = logging.getLogger("s3gw")

# Object transfers take from milliseconds to many minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OTHER_BUCKET = "_other"  # S3 bucket names cannot start with "_"
_OPTIONS = {"gw_metrics_port", "gw_metrics_host", "gw_metrics_buckets", "gw_config"}


class BufferPoolCollector(Collector):
    """The crypto layer's shared staging-buffer pools (``crypto.shared_pool_stats``)."""

    def collect(self) -> Iterator[Metric]:
        labels = ["buffer_size"]
        hits = CounterMetricFamily(
            "s3gw_buffer_pool_hits", "Buffers reused from a pool.", labels=labels
        )
        misses = CounterMetricFamily(
            "s3gw_buffer_pool_misses", "Buffers newly allocated by a pool.", labels=labels
        )
        idle = GaugeMetricFamily("s3gw_buffer_pool_idle", "Buffers kept for reuse.", labels=labels)
        in_use = GaugeMetricFamily(
            "s3gw_buffer_pool_in_use", "Buffers currently lent out.", labels=labels
        )
        for stats in shared_pool_stats():
            value = [str(stats.buffer_size)]
            hits.add_metric(value, stats.hits)
            misses.add_metric(value, stats.misses)
            idle.add_metric(value, stats.idle)
            in_use.add_metric(value, stats.in_use)
        yield from (hits, misses, idle, in_use)


class Metrics:
    def __init__(self, config: Config) -> None:
        self._config = config
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._running = False
        self._buckets: frozenset[str] = frozenset()
        self._live: dict[str, http.HTTPFlow] = {}
        r = self.registry
        op_labels = ["operation", "status_class", "bucket"]
        self.requests = Counter(
            "s3gw_requests", "Requests answered, by operation and status class.", op_labels,
            registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "s3gw_request_duration_seconds",
            "Time from the request's first byte to the end of the answer.",
            op_labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.request_bytes = Counter(
            "s3gw_request_bytes", "Request bodies (Content-Length) received from clients.",
            ["operation", "bucket"], registry=r,
        )  # fmt: skip
        self.response_bytes = Counter(
            "s3gw_response_bytes", "Response bodies (Content-Length) sent to clients.",
            ["operation", "bucket"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "s3gw_requests_in_flight", "Requests received and not yet answered.", registry=r
        )
        self.auth_failures = Counter(
            "s3gw_auth_failures", "Requests refused by client authentication.", ["code"],
            registry=r,
        )  # fmt: skip
        self.backend_errors = Counter(
            "s3gw_backend_errors",
            "Backend failures: unreachable, 5xx answers, unusable answers.",
            ["reason"],
            registry=r,
        )
        self.crypto_bytes = Counter(
            "s3gw_crypto_bytes", "Bytes encrypted or decrypted, plaintext and ciphertext side.",
            ["direction", "side"], registry=r,
        )  # fmt: skip
        self.crypto_chunks = Counter(
            "s3gw_crypto_chunks", "Chunks encrypted or decrypted.", ["direction"], registry=r
        )
        self.crypto_failures = Counter(
            "s3gw_crypto_failures", "Encryptions or decryptions that failed.",
            ["direction", "reason"], registry=r,
        )  # fmt: skip
        r.register(BufferPoolCollector())
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_metrics_port",
            int,
            0,
            "Port of the Prometheus /metrics endpoint; 0: observability.metrics_port, "
            "which defaults to off.",
        )
        loader.add_option(
            "gw_metrics_host",
            str,
            "",
            "Address of the metrics endpoint (default: observability.metrics_host, "
            "else the gateway's listen host).",
        )
        loader.add_option(
            "gw_metrics_buckets",
            Sequence[str],
            [],
            "Buckets whose name may appear as a metric label (all others: _other), "
            "in addition to observability.metrics_buckets.",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & _OPTIONS:
            return
        settings = observability(self._config)
        port = ctx.options.gw_metrics_port or settings.metrics_port
        if not 0 <= port <= 65535:
            raise exceptions.OptionsError(f"gw_metrics_port: {port} is not a port")
        listen_host = self._config.current().listen_host if self._config.ready else "127.0.0.1"
        host = ctx.options.gw_metrics_host or settings.metrics_host or listen_host
        self._buckets = frozenset([*ctx.options.gw_metrics_buckets, *settings.metrics_buckets])
        address = (host, port) if port else None
        if address != self._address:
            self._address = address
            if self._running:
                self._restart()

    def running(self) -> None:
        self._running = True
        self._restart()

    def done(self) -> None:
        self._running = False
        self._stop()

    @property
    def url(self) -> str | None:
        """Where the metrics are served, once the endpoint is up."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def _restart(self) -> None:
        self._stop()
        if self._address is None:
            return
        host, port = self._address
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as error:
            log.error("s3gw: cannot serve metrics on %s:%d: %s", host, port, error)
            return
        log.info("s3gw: metrics at %s", self.url)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- flows ----------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if state_of(flow) is None:
            return  # health probes
        self._forget_lost_flows()
        self._live[flow.id] = flow
        self.in_flight.inc()

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _forget_lost_flows(self) -> None:
        """Flows that ended without a response or error hook (mitmproxy may skip both
        when a connection dies in between) must not count as in flight forever."""
        lost = [flow_id for flow_id, flow in self._live.items() if not flow.live]
        for flow_id in lost:
            del self._live[flow_id]
            self.in_flight.dec()

    def _finish(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is None or not finish_once(flow, "metrics"):
            return
        if self._live.pop(flow.id, None) is not None:
            self.in_flight.dec()
        result = outcome(flow, state)
        operation = operation_label(state.operation)
        bucket = self._bucket_label(state)
        self.requests.labels(operation, result.status_class, bucket).inc()
        self.duration.labels(operation, result.status_class, bucket).observe(result.duration)
        self.request_bytes.labels(operation, bucket).inc(result.request_bytes)
        self.response_bytes.labels(operation, bucket).inc(result.response_bytes)
        if is_auth_failure(state):
            assert state.error is not None
            self.auth_failures.labels(bounded_code(state.error.code)).inc()
        reason = backend_error(flow, state, result)
        if reason is not None:
            self.backend_errors.labels(reason).inc()
        self._count_crypto(flow, state)

    def _count_crypto(self, flow: http.HTTPFlow, state: FlowState) -> None:
        if not self._config.ready:
            return
        stats = crypto_stats(flow, state, self._config.current().chunk_size)
        if stats is None:
            return
        direction = stats.direction
        if stats.error:
            self.crypto_failures.labels(direction, bounded_code(stats.error)).inc()
            return
        self.crypto_bytes.labels(direction, "plaintext").inc(stats.plaintext_bytes)
        self.crypto_bytes.labels(direction, "ciphertext").inc(stats.ciphertext_bytes)
        self.crypto_chunks.labels(direction).inc(stats.chunks)

    def _bucket_label(self, state: FlowState) -> str:
        bucket = state.operation.bucket
        if not bucket:
            return ""
        return bucket if bucket in self._buckets else OTHER_BUCKET

"""OpenTelemetry tracing of S3 requests (off unless an exporter is configured).

Each request gets a server span ``s3.<Operation>``, continuing the client's W3C
trace context if it sent one; the backend call is a child span whose context
goes to the backend in a ``traceparent`` header; encrypting or decrypting the
body is another child span with byte and chunk counts. Spans carry no headers,
query strings, signatures or credentials, and no object keys if they are
configured as sensitive.

When tracing is off no tracer provider exists and every hook returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from addons.config import Config
from addons.flowstate import CryptoStats, FlowState, active_state, state_of
from addons.observe import (
    client_headers,
    crypto_stats,
    finish_once,
    observability,
    operation_label,
    outcome,
)

log = logging.getLogger("s3gw")

EXPORTERS = ("none", "console", "otlp-http", "otlp-grpc", "memory")
SERVICE_NAME = "s3-encryption-gateway"
_OPTIONS = {
    "gw_tracing",
    "gw_tracing_endpoint",
    "gw_tracing_sample_ratio",
    "gw_tracing_hide_keys",
    "gw_config",
}
_KEY = "s3gw.tracing"
_PROPAGATOR = TraceContextTextMapPropagator()


def _ns(timestamp: float | None) -> int:
    return int((timestamp if timestamp is not None else time.time()) * 1e9)


@dataclass
class _FlowSpans:
    root: trace.Span
    backend: trace.Span | None = None
    backend_open: bool = False
    forwarded: float | None = None  # time.time() when the request left for the backend


def _exporter(name: str, endpoint: str) -> tuple[SpanExporter, bool]:
    """The exporter for ``name`` and whether it should be batched."""
    if name == "console":
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n"), False
    if name == "memory":
        return InMemorySpanExporter(), False
    if name == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint or None), True
    if name == "otlp-grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise exceptions.OptionsError(
                "gw_tracing: otlp-grpc needs the opentelemetry-exporter-otlp-proto-grpc package"
            ) from None
        return GrpcSpanExporter(endpoint=endpoint or None), True
    raise exceptions.OptionsError(
        f"gw_tracing: unknown exporter {name!r} (one of {', '.join(EXPORTERS)})"
    )


def _resource() -> Resource:
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SERVICE_NAME
    with contextlib.suppress(metadata.PackageNotFoundError):
        attributes["service.version"] = metadata.version(SERVICE_NAME)
    return Resource.create(attributes)


class Tracing:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._hide_keys = False
        self.memory_exporter: InMemorySpanExporter | None = None  # with exporter "memory"

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_tracing",
            str,
            "",
            f"Trace exporter: {', '.join(EXPORTERS)} "
            "(default: observability.tracing_exporter, else none: tracing off).",
        )
        loader.add_option(
            "gw_tracing_endpoint",
            str,
            "",
            "OTLP endpoint, e.g. http://collector:4318/v1/traces "
            "(default: observability.tracing_endpoint, else the OTEL_EXPORTER_OTLP_* "
            "environment or the exporter's default).",
        )
        loader.add_option(
            "gw_tracing_sample_ratio",
            str,
            "",
            "Share of new traces sampled, 0..1; a client's sampling decision is followed "
            "(default: observability.tracing_sample_ratio, else 1).",
        )
        loader.add_option(
            "gw_tracing_hide_keys",
            bool,
            False,
            "Keep object keys out of spans (also: observability.redact_object_keys).",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & _OPTIONS:
            return
        settings = observability(self._config)
        options = ctx.options
        name = options.gw_tracing or settings.tracing_exporter or "none"
        endpoint = options.gw_tracing_endpoint or settings.tracing_endpoint
        ratio = settings.tracing_sample_ratio
        if options.gw_tracing_sample_ratio:
            try:
                ratio = float(options.gw_tracing_sample_ratio)
            except ValueError:
                ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise exceptions.OptionsError("gw_tracing_sample_ratio must be a number from 0 to 1")
        self._hide_keys = options.gw_tracing_hide_keys or settings.redact_object_keys
        self._shutdown()
        if name == "none":
            return
        exporter, batched = _exporter(name, endpoint)
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(ratio)), resource=_resource()
        )
        processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        self._provider = provider
        self._tracer = provider.get_tracer("s3gw")
        self.memory_exporter = exporter if isinstance(exporter, InMemorySpanExporter) else None
        log.info("s3gw: tracing with the %s exporter, sampling %g", name, ratio)

    def done(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        """Flush and stop the current provider (spans still open are dropped)."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            provider.shutdown()

    # -- flows ----------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self._tracer is None:
            return
        state = state_of(flow)
        if state is None:
            return  # health probes
        parent = _PROPAGATOR.extract(flow.request.headers)
        root = self._tracer.start_span(
            f"s3.{operation_label(state.operation)}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=_ns(flow.request.timestamp_start),
            attributes=self._request_attributes(flow, state),
        )
        spans = _FlowSpans(root)
        flow.metadata[_KEY] = spans
        if flow.request.stream and active_state(flow) is not None:
            self._forward(flow, spans)  # the headers leave now, the body follows

    def request(self, flow: http.HTTPFlow) -> None:
        if self._tracer is None:
            return
        spans = flow.metadata.get(_KEY)
        if isinstance(spans, _FlowSpans) and spans.backend is None and active_state(flow):
            self._forward(flow, spans)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self._tracer is None:
            return
        spans = flow.metadata.get(_KEY)
        if not isinstance(spans, _FlowSpans) or not spans.backend_open:
            return
        assert spans.backend is not None and flow.response is not None
        state = state_of(flow)
        status = state.backend_status if state is not None else None
        if status is not None:
            spans.backend.set_attribute("http.response.status_code", status)
            if status >= 500:
                spans.backend.set_status(Status(StatusCode.ERROR))
        spans.backend.end(_ns(flow.response.timestamp_start))
        spans.backend_open = False

    def response(self, flow: http.HTTPFlow) -> None:
        if self._tracer is not None:
            self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if self._tracer is not None:
            self._finish(flow)

    def _forward(self, flow: http.HTTPFlow, spans: _FlowSpans) -> None:
        assert self._tracer is not None
        spans.forwarded = time.time()
        request = flow.request
        spans.backend = self._tracer.start_span(
            "s3gw.backend",
            context=trace.set_span_in_context(spans.root),
            kind=SpanKind.CLIENT,
            start_time=_ns(spans.forwarded),
            attributes={
                "server.address": request.host,
                "server.port": request.port,
                "http.request.method": request.method,
            },
        )
        spans.backend_open = True
        # Not an x-amz-* header: the backend signature does not cover it.
        _PROPAGATOR.inject(request.headers, context=trace.set_span_in_context(spans.backend))

    def _request_attributes(self, flow: http.HTTPFlow, state: FlowState) -> dict[str, Any]:
        operation = state.operation
        attributes: dict[str, Any] = {
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation_label(operation),
            "http.request.method": flow.request.method,
            "aws.request_id": state.request_id,
        }
        if operation.bucket:
            attributes["aws.s3.bucket"] = operation.bucket
        if operation.key and not self._hide_keys:
            attributes["aws.s3.key"] = operation.key
        peer = flow.client_conn.peername
        if peer:
            attributes["client.address"] = str(peer[0])
        requested = client_headers(flow, state).get("range")  # the backend's may differ
        if requested is not None:
            attributes["s3gw.range"] = requested
        return attributes

    def _finish(self, flow: http.HTTPFlow) -> None:
        spans = flow.metadata.get(_KEY)
        state = state_of(flow)
        if not isinstance(spans, _FlowSpans) or state is None:
            return
        if not finish_once(flow, "tracing"):
            return
        result = outcome(flow, state)
        now = time.time()
        if spans.backend is not None and spans.backend_open:
            spans.backend.set_status(Status(StatusCode.ERROR, "no answer from the backend"))
            spans.backend.end(_ns(now))
            spans.backend_open = False
        if self._config.ready:
            stats = crypto_stats(flow, state, self._config.current().chunk_size)
            if stats is not None:
                self._crypto_span(spans, stats, flow, now)
        root = spans.root
        root.set_attribute("http.response.status_code", result.status)
        root.set_attribute("http.request.body.size", result.request_bytes)
        root.set_attribute("http.response.body.size", result.response_bytes)
        if state.encryption:
            root.set_attribute("s3gw.encryption", state.encryption)
        if result.error_code:
            root.set_attribute("error.type", result.error_code)
        if result.aborted:
            root.set_attribute("s3gw.aborted", True)
        if result.status >= 500 or result.aborted:
            root.set_status(Status(StatusCode.ERROR, result.error_code or None))
        root.end(_ns(now))

    def _crypto_span(
        self, spans: _FlowSpans, stats: CryptoStats, flow: http.HTTPFlow, now: float
    ) -> None:
        assert self._tracer is not None
        started, finished = stats.started, stats.finished
        if started is None:  # a buffered upload, encrypted between receipt and forwarding
            started = flow.request.timestamp_end if stats.direction == "encrypt" else None
            finished = spans.forwarded if stats.direction == "encrypt" else None
        started = started or now
        finished = max(finished or now, started)
        span = self._tracer.start_span(
            f"s3gw.{stats.direction}",
            context=trace.set_span_in_context(spans.root),
            kind=SpanKind.INTERNAL,
            start_time=_ns(started),
            attributes={
                "s3gw.crypto.plaintext_bytes": stats.plaintext_bytes,
                "s3gw.crypto.ciphertext_bytes": stats.ciphertext_bytes,
                "s3gw.crypto.chunks": stats.chunks,
            },
        )
        if stats.error:
            span.set_attribute("error.type", stats.error)
            span.set_status(Status(StatusCode.ERROR, stats.error))
        span.end(_ns(finished))

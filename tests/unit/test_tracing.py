"""The Tracing addon with the SDK's in-memory exporter, on the real addon chain."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from addons.flowstate import state_of
from addons.tracing import Tracing
from tests.unit.chain import (
    ACCESS_KEY,
    BACKEND_SECRET,
    CHUNK,
    SECRET_KEY,
    SESSION_TOKEN,
    Chain,
    MemoryS3,
    gateway_chain,
    presigned,
    signed,
)

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"
DATA = bytes(range(256)) * 20  # 5120 bytes: five chunks of 1 KiB
KEY = "private/payroll-2024.csv"


@contextmanager
def tracing_chain(tmp_path: Path, **options: Any) -> Iterator[Chain]:
    with gateway_chain(tmp_path, [Tracing], options={"gw_tracing": "memory", **options}) as chain:
        yield chain


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with tracing_chain(tmp_path) as chain:
        yield chain


def exporter_of(chain: Chain) -> InMemorySpanExporter:
    tracing = chain.addons[-1]
    assert isinstance(tracing, Tracing) and tracing.memory_exporter is not None
    return tracing.memory_exporter


def spans_of(chain: Chain) -> dict[str, ReadableSpan]:
    """The spans exported so far, by name (each name must appear once)."""
    spans = exporter_of(chain).get_finished_spans()
    by_name = {span.name: span for span in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]
    return by_name


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def everything_exported(spans: dict[str, ReadableSpan]) -> str:
    return "\n".join(span.to_json() for span in spans.values())


def sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def put_then_get(chain: Chain, backend: MemoryS3, range_header: str | None = None) -> bytes:
    flow, _ = chain.send(signed("PUT", f"/bucket/{KEY}", DATA), backend)
    assert flow.response is not None and flow.response.status_code == 200
    exporter_of(chain).clear()
    headers = {"Range": range_header} if range_header else {}
    flow, body = chain.send(signed("GET", f"/bucket/{KEY}", headers=headers), backend)
    assert flow.response is not None
    return body


def test_put_has_a_server_span_a_backend_span_and_an_encrypt_span(chain: Chain) -> None:
    backend = MemoryS3()
    flow, _ = chain.send(
        signed("PUT", f"/bucket/{KEY}", DATA, {"traceparent": CLIENT_PARENT}), backend
    )
    assert flow.response is not None and flow.response.status_code == 200
    spans = spans_of(chain)
    assert set(spans) == {"s3.PutObject", "s3gw.backend", "s3gw.encrypt"}
    root, call, encrypt = spans["s3.PutObject"], spans["s3gw.backend"], spans["s3gw.encrypt"]

    # The client's trace continues; both children hang off the server span.
    assert root.kind is SpanKind.SERVER
    assert root.context is not None and root.parent is not None
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE_ID
    assert root.parent.span_id == int(CLIENT_PARENT.split("-")[2], 16)
    for child in (call, encrypt):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context is not None and child.context.trace_id == root.context.trace_id
    assert call.kind is SpanKind.CLIENT

    # The backend got the backend span's context, not the client's.
    forwarded = backend.requests[-1].headers["traceparent"]
    assert call.context is not None
    assert forwarded == f"00-{CLIENT_TRACE_ID}-{call.context.span_id:016x}-01"

    state = state_of(flow)
    assert state is not None
    assert attributes(root) == {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": "PutObject",
        "http.request.method": "PUT",
        "aws.request_id": state.request_id,
        "aws.s3.bucket": "bucket",
        "aws.s3.key": KEY,
        "client.address": "127.0.0.1",
        "http.response.status_code": 200,
        "http.request.body.size": len(DATA),
        "http.response.body.size": 0,
        "s3gw.encryption": "s3g1",
    }
    assert attributes(call)["http.response.status_code"] == 200
    assert attributes(encrypt) == {
        "s3gw.crypto.plaintext_bytes": len(DATA),
        "s3gw.crypto.ciphertext_bytes": len(backend.objects[f"/bucket/{KEY}"][0]),
        "s3gw.crypto.chunks": len(DATA) // CHUNK,
    }
    assert root.start_time is not None and root.end_time is not None
    for child in (call, encrypt):
        assert child.start_time is not None and child.end_time is not None
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time


def test_ranged_get_has_a_decrypt_span_with_the_chunks_read(chain: Chain) -> None:
    backend = MemoryS3()
    body = put_then_get(chain, backend, "bytes=1500-2600")
    assert body == DATA[1500:2601]
    spans = spans_of(chain)
    root, decrypt = spans["s3.GetObject"], spans["s3gw.decrypt"]
    assert root.context is not None and decrypt.parent is not None
    assert decrypt.parent.span_id == root.context.span_id
    root_attributes = attributes(root)
    assert root_attributes["http.response.status_code"] == 206
    assert root_attributes["s3gw.range"] == "bytes=1500-2600"
    assert root_attributes["http.response.body.size"] == 1101
    assert attributes(decrypt) == {
        "s3gw.crypto.plaintext_bytes": 1101,
        # chunks 1 and 2 of 1 KiB, each with its 16-byte tag
        "s3gw.crypto.ciphertext_bytes": 2 * (CHUNK + 16),
        "s3gw.crypto.chunks": 2,
    }
    assert root.status.status_code is StatusCode.UNSET


def test_auth_failure_is_a_lone_server_span_with_the_error_code(chain: Chain) -> None:
    backend = MemoryS3()
    flow, _ = chain.send(
        signed("GET", f"/bucket/{KEY}", secret="wrong" + SECRET_KEY, token=SESSION_TOKEN),
        backend,
    )
    assert flow.response is not None and flow.response.status_code == 403
    assert backend.requests == []
    spans = spans_of(chain)
    assert set(spans) == {"s3.GetObject"}
    root_attributes = attributes(spans["s3.GetObject"])
    assert root_attributes["error.type"] == "SignatureDoesNotMatch"
    assert root_attributes["http.response.status_code"] == 403
    assert "traceparent" not in flow.request.headers  # nothing was forwarded
    exported = everything_exported(spans)
    for secret in (SECRET_KEY, SESSION_TOKEN, flow.request.headers["authorization"][-64:]):
        assert secret not in exported


def test_no_credentials_signatures_or_hidden_keys_in_spans(tmp_path: Path) -> None:
    with tracing_chain(tmp_path, gw_tracing_hide_keys=True) as chain:
        backend = MemoryS3()
        put_then_get(chain, backend)
        request = presigned("GET", f"/bucket/{KEY}", token=SESSION_TOKEN)
        signature = request.query["X-Amz-Signature"]
        flow, _ = chain.send(request, backend)
        assert flow.response is not None and flow.response.status_code == 200
        spans = exporter_of(chain).get_finished_spans()
        assert len(spans) == 6  # PUT, GET, presigned GET: a server and a backend span each
        exported = "\n".join(span.to_json() for span in spans)
        for secret in (SECRET_KEY, SESSION_TOKEN, signature, BACKEND_SECRET, KEY, "payroll"):
            assert secret not in exported
        assert ACCESS_KEY not in exported  # nor the credential scope
        assert all("aws.s3.key" not in attributes(s) for s in spans)


def test_backend_failure_marks_both_spans_as_errors(chain: Chain) -> None:
    flow, _ = chain.send(signed("GET", "/bucket/key"), backend=None)
    assert flow.error is not None
    spans = spans_of(chain)
    root, call = spans["s3.GetObject"], spans["s3gw.backend"]
    assert root.status.status_code is StatusCode.ERROR
    assert call.status.status_code is StatusCode.ERROR
    assert attributes(root)["error.type"] == "BadGateway"
    assert attributes(root)["http.response.status_code"] == 502


def test_unsampled_client_trace_is_followed_and_propagated(chain: Chain) -> None:
    backend = MemoryS3()
    unsampled = CLIENT_PARENT[:-2] + "00"
    chain.send(signed("HEAD", "/bucket/missing", headers={"traceparent": unsampled}), backend)
    assert spans_of(chain) == {}
    forwarded = backend.requests[-1].headers["traceparent"]
    assert forwarded.startswith(f"00-{CLIENT_TRACE_ID}-") and not sampled(forwarded)
    assert forwarded != unsampled  # a new span id: the gateway's hop


def test_sample_ratio_zero_records_nothing_but_still_propagates(tmp_path: Path) -> None:
    with tracing_chain(tmp_path, gw_tracing_sample_ratio="0") as chain:
        backend = MemoryS3()
        chain.send(signed("HEAD", "/bucket/missing"), backend)
        assert spans_of(chain) == {}
        assert not sampled(backend.requests[-1].headers["traceparent"])


def test_off_by_default_touches_nothing(tmp_path: Path) -> None:
    with tracing_chain(tmp_path, gw_tracing="") as chain:
        tracing = chain.addons[-1]
        assert isinstance(tracing, Tracing)
        assert tracing._provider is None and tracing.memory_exporter is None
        backend = MemoryS3()
        flow, _ = chain.send(
            signed("HEAD", "/bucket/k", headers={"traceparent": CLIENT_PARENT}), backend
        )
        assert "s3gw.tracing" not in flow.metadata
        assert backend.requests[-1].headers["traceparent"] == CLIENT_PARENT  # passed through


def test_yaml_settings_enable_tracing(tmp_path: Path) -> None:
    observability = {"tracing_exporter": "memory", "redact_object_keys": True}
    with gateway_chain(tmp_path, [Tracing], observability=observability) as chain:
        chain.send(signed("HEAD", f"/bucket/{KEY}"), MemoryS3())
        spans = spans_of(chain)
        assert set(spans) == {"s3.HeadObject", "s3gw.backend"}
        assert "aws.s3.key" not in attributes(spans["s3.HeadObject"])


@pytest.mark.parametrize(
    ("option", "value"),
    [("gw_tracing", "zipkin"), ("gw_tracing_sample_ratio", "2"), ("gw_tracing_sample_ratio", "x")],
)
def test_bad_options_are_refused(tmp_path: Path, option: str, value: str) -> None:
    with (
        pytest.raises(exceptions.OptionsError),
        gateway_chain(tmp_path, [Tracing], options={option: value}),
    ):
        pass


def test_otlp_grpc_needs_its_exporter_package(tmp_path: Path) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    except ImportError:
        with (
            pytest.raises(exceptions.OptionsError, match="opentelemetry-exporter-otlp-proto-grpc"),
            tracing_chain(tmp_path, gw_tracing="otlp-grpc"),
        ):
            pass
    else:
        with tracing_chain(tmp_path, gw_tracing="otlp-grpc") as chain:
            assert chain.addons[-1]._tracer is not None

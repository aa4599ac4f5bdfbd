"""The ListingTranslation addon on mitmproxy flows (mitmproxy's addon test context).

The conformance suite (tests/test_listing.py) covers real backends; this covers
what they cannot be made to send: broken, oversized and compressed listings.
"""

from __future__ import annotations

import base64
import gzip
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from addons.config import Config
from addons.context import RequestContext
from addons.flowstate import state_of
from addons.listing import ListingTranslation
from addons.s3.errors import BAD_GATEWAY
from addons.s3.listxml import MAX_LISTING_BYTES
from addons.transforms import ReplaceBodyTransform
from crypto import ciphertext_length

CHUNK = 65536
NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def listing(*sizes: int) -> bytes:
    entries = "".join(
        f"<Contents><Key>k{i}</Key><ETag>&quot;e&quot;</ETag><Size>{size}</Size></Contents>"
        for i, size in enumerate(sizes)
    )
    document = f'<ListBucketResult xmlns="{NS}">{entries}</ListBucketResult>'
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + document.encode()


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    settings = {
        "backend": {
            "url": "http://127.0.0.1:9",
            "region": "us-east-1",
            "access_key_id": "BACKENDACCESSKEY0001",
            "secret_access_key": "backendSecret0001/aB3dE5gH7jK9mN1pQ3sT5v",
        },
        "credentials": [
            {
                "access_key_id": "GWTESTACCESSKEY00001",
                "secret_access_key": "gwTestSecret0001/aB3dE5gH7jK9mN1pQ3sT5vX",
            }
        ],
        "keyring": {
            "active": "k1",
            "keys": {"k1": {"base64": base64.b64encode(os.urandom(32)).decode()}},
        },
        "encryption": {"chunk_size": CHUNK},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings))
    addon = Config()
    with taddons.context(Proxyserver(), addon) as context:
        context.configure(addon, gw_config=str(path))
        yield addon


def answered_flow(
    config: Config,
    path: str,
    body: bytes,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    """A flow for ``GET path`` that the backend answered; both addons' hooks are run."""
    flow = tflow.tflow()
    flow.request.method = "GET"
    flow.request.path = path
    RequestContext(config).requestheaders(flow)
    flow.response = http.Response.make(status, body, {"Content-Type": "application/xml"})
    # After make(), which would re-encode the body and recompute Content-Length.
    flow.response.headers.update(headers or {})
    if "Transfer-Encoding" in flow.response.headers:
        del flow.response.headers["Content-Length"]
    addon = ListingTranslation(config)
    addon.responseheaders(flow)
    if not flow.response.stream:
        addon.response(flow)
    return flow


def sizes_in(body: bytes) -> list[int]:
    return [int(s.text or "") for s in ET.fromstring(body).iter(f"{{{NS}}}Size")]


def assert_bad_gateway(flow: http.HTTPFlow, body: bytes) -> None:
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert ET.fromstring(body).findtext("Code") == BAD_GATEWAY
    state = state_of(flow)
    assert state is not None and state.error is not None


@pytest.mark.parametrize("path", ["/b?list-type=2&prefix=a", "/b", "/b?versions"])
def test_sizes_are_rewritten_and_content_length_follows(config: Config, path: str) -> None:
    body = listing(ciphertext_length(100_000, CHUNK), 10)
    flow = answered_flow(config, path, body)
    assert flow.response is not None and flow.response.stream is False
    content = flow.response.content or b""
    assert sizes_in(content) == [100_000, 10]
    assert flow.response.headers["content-length"] == str(len(content))


def test_other_answers_pass_untouched(config: Config) -> None:
    body = listing(ciphertext_length(5, CHUNK))
    for path, status in [
        ("/b?list-type=2", 404),
        ("/b?uploads", 200),  # ListMultipartUploads: no object sizes
        ("/b/key", 200),  # GetObject
    ]:
        flow = answered_flow(config, path, body, status=status)
        assert flow.response is not None and flow.response.content == body


def test_malformed_listing_is_a_bad_gateway_error(config: Config) -> None:
    flow = answered_flow(config, "/b?list-type=2", b"<ListBucketResult><Contents>")
    assert flow.response is not None
    body = flow.response.content or b""
    assert_bad_gateway(flow, body)
    assert flow.response.headers["content-length"] == str(len(body))


def test_declared_oversized_listing_is_refused_unread(config: Config) -> None:
    flow = answered_flow(
        config,
        "/b?list-type=2",
        b"",
        headers={"Content-Length": str(MAX_LISTING_BYTES + 1)},
    )
    assert flow.response is not None
    transform = flow.response.stream
    assert isinstance(transform, ReplaceBodyTransform)
    assert_bad_gateway(flow, b"".join(transform(b"<ListBucketResult>") + transform(b"")))


def test_compressed_listing_is_rewritten_and_recompressed(config: Config) -> None:
    body = listing(ciphertext_length(7, CHUNK))
    flow = answered_flow(
        config, "/b?list-type=2", gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    assert flow.response is not None
    assert flow.response.headers["content-encoding"] == "gzip"
    assert sizes_in(gzip.decompress(flow.response.raw_content or b"")) == [7]
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content or b""))


def test_chunked_listing_stays_chunked(config: Config) -> None:
    body = listing(ciphertext_length(7, CHUNK))
    flow = answered_flow(config, "/b?list-type=2", body, headers={"Transfer-Encoding": "chunked"})
    assert flow.response is not None
    assert sizes_in(flow.response.content or b"") == [7]
    assert "content-length" not in flow.response.headers

"""Stored objects modified behind the gateway's back are never served as good data.

Each test writes an object through the gateway, then rewrites it directly on
the backend (same key, the gateway's envelope metadata, a modified body; with
the backend's own client, as an attacker with storage access would) and reads
it through the gateway. A read that touches modified bytes must fail loudly:
an S3 error answer, or a body cut short (the gateway closes the connection
before the announced length), never a complete success. Nothing past the last
authentic chunk may reach the client, the gateway keeps running, and its log
names the failure.
"""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.config import Config

from crypto import ciphertext_length
from crypto.format import HEADER_LENGTH, TAG_LENGTH
from tests.harness import CHUNK_SIZE, GATEWAY_USER, Backend, Gateway
from tests.rawclient import connect, sign

C = CHUNK_SIZE
STRIDE = C + TAG_LENGTH
SIZE = 3 * C + 1234  # chunks 0..2 full, chunk 3 partial
KEY = "victim"


def chunk_offset(index: int) -> int:
    """Where chunk ``index`` starts in the stored ciphertext."""
    return HEADER_LENGTH + index * STRIDE


@dataclass(frozen=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes  # what arrived, possibly cut short
    error: str | None  # how the body ended early, if it did

    @property
    def complete(self) -> bool:
        return self.error is None


def fetch(gateway: Gateway, bucket: str, key: str, range_header: str | None = None) -> Outcome:
    """GET through the gateway, keeping whatever arrives before the connection drops."""
    url = f"{gateway.url}/{bucket}/{key}"
    headers = [("Range", range_header)] if range_header else []
    signed = sign("GET", url, GATEWAY_USER, headers=headers)
    connection = connect(url)
    try:
        connection.putrequest("GET", f"/{bucket}/{key}", skip_host=True, skip_accept_encoding=True)
        for name, value in signed.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        status = response.status
        response_headers = {name.lower(): value for name, value in response.getheaders()}
        try:
            return Outcome(status, response_headers, response.read(), None)
        except http.client.IncompleteRead as cut:
            return Outcome(status, response_headers, cut.partial, repr(cut))
        except (ConnectionError, http.client.HTTPException) as cut:
            return Outcome(status, response_headers, b"", repr(cut))
    finally:
        connection.close()


def _direct(backend: Backend) -> Any:
    # The backend's checksums cover the stored bytes; not what these tests look at.
    return backend.client(config=Config(response_checksum_validation="when_required"))


@dataclass(frozen=True)
class Stored:
    plaintext: bytes
    ciphertext: bytes
    metadata: dict[str, str]  # includes the envelope under "s3gw"


def write_through_gateway(
    backend: Backend, gateway: Gateway, bucket: str, key: str, size: int = SIZE
) -> Stored:
    plaintext = os.urandom(size)
    gateway.client().put_object(Bucket=bucket, Key=key, Body=plaintext)
    stored = _direct(backend).get_object(Bucket=bucket, Key=key)
    ciphertext = stored["Body"].read()
    assert len(ciphertext) == ciphertext_length(size, C)
    metadata = {name.lower(): value for name, value in stored["Metadata"].items()}
    assert "s3gw" in metadata
    return Stored(plaintext, ciphertext, metadata)


def rewrite_directly(
    backend: Backend, bucket: str, key: str, body: bytes, metadata: dict[str, str]
) -> None:
    _direct(backend).put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def assert_fails_loudly(outcome: Outcome, plaintext: bytes, authentic_prefix: int) -> None:
    """An error answer, or a cut body holding at most ``authentic_prefix`` good bytes."""
    if outcome.status >= 500:
        assert outcome.headers.get("content-type") == "application/xml", outcome
        assert b"<Code>InternalError</Code>" in outcome.body, outcome
        return
    assert outcome.status in (200, 206), outcome.status
    assert not outcome.complete, "a complete success for modified data"
    assert int(outcome.headers["content-length"]) > len(outcome.body)
    assert len(outcome.body) <= authentic_prefix, "unauthenticated bytes reached the client"


def assert_range_served(outcome: Outcome, plaintext: bytes, first: int, last: int) -> None:
    assert outcome.complete, outcome.error
    assert outcome.status == 206
    assert outcome.headers["content-range"] == f"bytes {first}-{last}/{len(plaintext)}"
    assert outcome.body == plaintext[first : last + 1]


def assert_logged(gateway: Gateway, since: int, key: str) -> None:
    assert gateway.alive()
    gateway.wait_for_output(rf"s3gw: .*{key}\S*: \S.*", since=since)


# --------------------------------------------------------------------------- chunk bodies


def test_flipped_chunk_byte(backend: Backend, gateway: Gateway, bucket: str) -> None:
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(
        backend, bucket, KEY, flip(stored.ciphertext, chunk_offset(1) + 1000), stored.metadata
    )
    plaintext = stored.plaintext

    mark = gateway.log_mark()
    whole = fetch(gateway, bucket, KEY)
    assert_fails_loudly(whole, plaintext, authentic_prefix=C)
    assert whole.body == plaintext[: len(whole.body)]
    assert_logged(gateway, mark, KEY)

    for touching in (f"bytes={C + 5}-{C + 10}", f"bytes={C - 10}-{C + 10}", f"bytes={C}-"):
        mark = gateway.log_mark()
        assert_fails_loudly(fetch(gateway, bucket, KEY, touching), plaintext, authentic_prefix=10)
        assert_logged(gateway, mark, KEY)

    assert_range_served(fetch(gateway, bucket, KEY, "bytes=0-99"), plaintext, 0, 99)
    assert_range_served(fetch(gateway, bucket, KEY, f"bytes=0-{C - 1}"), plaintext, 0, C - 1)
    assert_range_served(
        fetch(gateway, bucket, KEY, f"bytes={2 * C}-{2 * C + 99}"), plaintext, 2 * C, 2 * C + 99
    )
    assert_range_served(fetch(gateway, bucket, KEY, "bytes=-100"), plaintext, SIZE - 100, SIZE - 1)


def test_flipped_final_tag(backend: Backend, gateway: Gateway, bucket: str) -> None:
    """The very last byte: everything before it is authentic, the body still ends short."""
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(
        backend, bucket, KEY, flip(stored.ciphertext, len(stored.ciphertext) - 1), stored.metadata
    )
    mark = gateway.log_mark()
    whole = fetch(gateway, bucket, KEY)
    assert_fails_loudly(whole, stored.plaintext, authentic_prefix=3 * C)
    assert_logged(gateway, mark, KEY)
    assert_fails_loudly(fetch(gateway, bucket, KEY, "bytes=-1"), stored.plaintext, 0)


# --------------------------------------------------------------------------- frame header


@pytest.mark.parametrize("offset", [0, 4, 20, 40], ids=["magic", "algorithm", "salt", "commitment"])
def test_flipped_header_byte(backend: Backend, gateway: Gateway, bucket: str, offset: int) -> None:
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(backend, bucket, KEY, flip(stored.ciphertext, offset), stored.metadata)
    mark = gateway.log_mark()
    assert_fails_loudly(fetch(gateway, bucket, KEY), stored.plaintext, authentic_prefix=0)
    assert_logged(gateway, mark, KEY)
    # A ranged read does not fetch the stored header: the envelope describes the
    # frame and its key commitment authenticates that description (see
    # docs/ENCRYPTION_DESIGN.md), so the chunks still decrypt to the right bytes.
    assert_range_served(
        fetch(gateway, bucket, KEY, f"bytes={C}-{C + 99}"), stored.plaintext, C, C + 99
    )


# --------------------------------------------------------------------------- lengths


def test_truncated_object(backend: Backend, gateway: Gateway, bucket: str) -> None:
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(backend, bucket, KEY, stored.ciphertext[: chunk_offset(3)], stored.metadata)
    for range_header in (None, "bytes=0-99", f"bytes={3 * C}-"):
        mark = gateway.log_mark()
        outcome = fetch(gateway, bucket, KEY, range_header)
        assert_fails_loudly(outcome, stored.plaintext, authentic_prefix=0)
        assert_logged(gateway, mark, KEY)


def test_appended_byte(backend: Backend, gateway: Gateway, bucket: str) -> None:
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(backend, bucket, KEY, stored.ciphertext + b"\x00", stored.metadata)
    for range_header in (None, "bytes=0-99"):
        mark = gateway.log_mark()
        outcome = fetch(gateway, bucket, KEY, range_header)
        assert_fails_loudly(outcome, stored.plaintext, authentic_prefix=0)
        assert_logged(gateway, mark, KEY)


# --------------------------------------------------------------------------- envelope


def test_swapped_envelope(backend: Backend, gateway: Gateway, bucket: str) -> None:
    """Another object's envelope (same size, so every length still agrees)."""
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    other = write_through_gateway(backend, gateway, bucket, "other")
    rewrite_directly(backend, bucket, KEY, stored.ciphertext, other.metadata)
    for range_header in (None, "bytes=0-99", f"bytes={2 * C}-{2 * C + 99}"):
        mark = gateway.log_mark()
        outcome = fetch(gateway, bucket, KEY, range_header)
        assert_fails_loudly(outcome, stored.plaintext, authentic_prefix=0)
        assert_logged(gateway, mark, KEY)


def test_ciphertext_without_its_envelope_is_not_served_as_data(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    """An encrypted body whose metadata was lost would pass for a legacy plaintext object."""
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(backend, bucket, KEY, stored.ciphertext, {})
    for range_header in (None, "bytes=0-99", "bytes=10-"):
        mark = gateway.log_mark()
        outcome = fetch(gateway, bucket, KEY, range_header)
        assert_fails_loudly(outcome, stored.plaintext, authentic_prefix=0)
        assert_logged(gateway, mark, KEY)
    # A legacy object of fewer bytes than a frame header is still served whole.
    rewrite_directly(backend, bucket, KEY, stored.ciphertext[:20], {})
    outcome = fetch(gateway, bucket, KEY)
    assert outcome.complete and outcome.body == stored.ciphertext[:20]


def test_gateway_serves_other_objects_after_failures(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    stored = write_through_gateway(backend, gateway, bucket, KEY)
    rewrite_directly(
        backend, bucket, KEY, flip(stored.ciphertext, chunk_offset(0)), stored.metadata
    )
    for _ in range(3):
        assert_fails_loudly(fetch(gateway, bucket, KEY), stored.plaintext, authentic_prefix=0)
    healthy = write_through_gateway(backend, gateway, bucket, "healthy", size=1000)
    outcome = fetch(gateway, bucket, "healthy")
    assert outcome.complete and outcome.status == 200
    assert outcome.body == healthy.plaintext
    assert gateway.alive()

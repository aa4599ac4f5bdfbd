"""Hand-built S3 requests for the gateway tests.

SDK clients only send well-formed requests; these helpers send the rest:
signatures made by botocore's own S3 signer but with a chosen payload hash or
client clock, bodies that differ from what was signed, and aws-chunked bodies
(signed chunk chains, corrupted trailers) sent over a plain ``http.client``
connection, piece by piece.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import socket
import ssl
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit
from xml.etree import ElementTree

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.harness import REGION, Backend, Credentials

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- signing


@contextmanager
def client_clock(when: datetime) -> Iterator[None]:
    """Make botocore sign as if the client's clock showed ``when``.

    botocore reads the time through ``botocore.auth.get_current_datetime``
    (naive UTC) for both header signatures and presigned URLs.
    """
    naive = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        yield


class _Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer, optionally with a payload hash we choose."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str | None) -> None:
        boto = BotoCredentials(credentials.access_key_id, credentials.secret_access_key)
        super().__init__(boto, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        if self._payload_hash is not None:
            return self._payload_hash
        return str(super().payload(request))


def sign(
    method: str,
    url: str,
    credentials: Credentials,
    *,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    payload_hash: str | None = None,
    when: datetime | None = None,
    region: str = REGION,
) -> dict[str, str]:
    """The headers to send (Host and the signature included) for a header-signed request.

    ``payload_hash`` defaults to the SHA-256 of ``body``, as botocore signs over HTTP.
    """
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value
    signer = _Signer(credentials, region, payload_hash)
    if when is None:
        signer.add_auth(request)
    else:
        with client_clock(when):
            signer.add_auth(request)
    signed = {"Host": urlsplit(url).netloc}
    signed.update({name: _text(value) for name, value in request.headers.items()})
    return signed


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def seed_signature(headers: dict[str, str]) -> str:
    """The signature of a header-signed request: the first link of a chunk chain."""
    return headers["Authorization"].rsplit("Signature=", 1)[1].strip()


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    def error(self) -> dict[str, str]:
        """The S3 ``<Error>`` document as a dict of its elements; asserts it is one."""
        assert self.headers.get("content-type", "").startswith("application/xml"), self.headers
        root = ElementTree.fromstring(self.body)
        assert root.tag == "Error", self.body
        return {child.tag: child.text or "" for child in root}


def connect(
    url: str, *, ca_file: Path | None = None, timeout: float = 30
) -> http.client.HTTPConnection:
    """A connection to an ``http://`` or ``https://`` endpoint (``ca_file`` verifies TLS)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def send(
    url: str,
    method: str,
    headers: dict[str, str],
    body: bytes | Sequence[bytes] = b"",
    *,
    ca_file: Path | None = None,
) -> RawResponse:
    """Send exactly these headers and body; a sequence of pieces is sent one write each.

    ``url`` is the full URL including the (already encoded) path and query.
    Raises ``ConnectionError`` or ``http.client.HTTPException`` if the server
    drops the connection instead of answering.
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    pieces = [body] if isinstance(body, bytes) else list(body)
    connection = connect(url, ca_file=ca_file)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        names = {name.lower() for name in headers}
        if "host" not in names:
            connection.putheader("Host", parts.netloc)
        for name, value in headers.items():
            connection.putheader(name, value)
        if "content-length" not in names:
            connection.putheader("Content-Length", str(sum(len(p) for p in pieces)))
        connection.endheaders()
        for piece in pieces:
            connection.send(piece)
        response = connection.getresponse()
        return RawResponse(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def signed_request(
    endpoint: str,
    credentials: Credentials,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> RawResponse:
    """Sign (SigV4, payload hash of ``body``) and send one request.

    ``path`` is the already encoded ``/bucket/key[?query]``; ``headers`` are
    sent exactly as given and covered by the signature.
    """
    url = endpoint + path
    return send(url, method, sign(method, url, credentials, body=body, headers=headers), body)


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# --------------------------------------------------------------------------- aws-chunked


def signing_key(secret: str, date: str, region: str = REGION) -> bytes:
    """SigV4's derived key, written out from the AWS documentation."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(
    data: bytes,
    chunk_size: int,
    *,
    headers: dict[str, str],
    credentials: Credentials,
    region: str = REGION,
) -> list[bytes]:
    """A ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` body, one element per chunk.

    Each chunk signs the previous signature (the request's own first) and the
    SHA-256 of its data; a zero-length chunk ends the body.
    """
    amz_date = headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    key = signing_key(credentials.secret_access_key, amz_date[:8], region)
    previous = seed_signature(headers)
    out = []
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    for chunk in [*chunks, b""]:
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        previous = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        out.append(f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n")
    return out


def signed_chunked_put(
    url: str,
    data: bytes,
    credentials: Credentials,
    *,
    chunk_size: int = 64 * 1024,
    final_chunk: bool = True,
) -> tuple[dict[str, str], list[bytes]]:
    """The signed headers and the chunks of an aws-chunked PUT of ``data``.

    Content-Length is signed, so it is computed first: every chunk's framing
    has the same length whatever its signature. Without ``final_chunk`` the
    0-chunk is left out (of the body and of Content-Length): the body is then
    complete as HTTP, not as aws-chunked.
    """
    lengths = [len(p) for p in pieces_of(data, chunk_size)] if data else []
    if final_chunk:
        lengths.append(0)
    framing = sum(len(f"{n:x};chunk-signature=".encode()) + 64 + 4 for n in lengths)
    headers = sign(
        "PUT",
        url,
        credentials,
        payload_hash=STREAMING_SIGNED,
        headers=[
            ("Content-Encoding", "aws-chunked"),
            ("X-Amz-Decoded-Content-Length", str(len(data))),
            ("Content-Length", str(len(data) + framing)),
        ],
    )
    chunks = signed_chunks(data, chunk_size, headers=headers, credentials=credentials)
    if not final_chunk:
        chunks = chunks[:-1]
    assert sum(len(c) for c in chunks) == int(headers["Content-Length"])
    return headers, chunks


def signed_put_head(url: str, data: bytes, length: int, credentials: Credentials) -> bytes:
    """The request head of a PUT signed for ``data`` but announcing ``length`` bytes."""
    headers = sign("PUT", url, credentials, body=data)
    headers["Content-Length"] = str(length)
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    lines = [f"PUT {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(port: int, data: bytes, *, half_close: bool, timeout: float = 30) -> bytes:
    """Send raw bytes to 127.0.0.1:``port``, optionally shut down our sending side, and
    return what comes back until the peer closes (or ``timeout`` passes without data)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionError, TimeoutError):
            pass
        return received


def crc32_trailer_body(data: bytes, chunk_size: int = 64 * 1024) -> bytes:
    """The aws-chunked body botocore sends with a CRC32 trailer (its own encoder)."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    return bytes(wrapper.read())


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


# --------------------------------------------------------------------------- backend checks


def stored_keys(backend: Backend, bucket: str) -> list[str]:
    """Keys in ``bucket``, listed on the backend directly."""
    listing: dict[str, Any] = backend.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def is_stored(backend: Backend, bucket: str, key: str) -> bool:
    """Whether the backend itself has ``key`` (asked directly, not through the gateway)."""
    try:
        backend.client().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True

"""No byte sequence of a known plaintext ever reaches the backend.

A backend of its own (so that everything it holds was stored by this test)
receives one known, high-entropy plaintext through the gateway from several
clients and by every upload path: small and streamed PutObject, aws-chunked
bodies over HTTPS, multipart uploads, presigned PUTs and server-side copies.
Then everything the backend stored is read back, bodies and headers of every
object in every bucket, and for rclone every file under its data directory, and
searched for any 16-byte window of the plaintext.
"""

from __future__ import annotations

import io
import os
import random
import urllib.request
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tests.clients import (
    RCLONE_IGNORE_ETAG,
    RCLONE_MULTIPART,
    Rclone,
    minio_client,
    s3fs_filesystem,
)
from tests.harness import (
    Backend,
    Gateway,
    GatewayFactory,
    make_bucket,
    start_moto,
    start_rclone,
)

MIB = 1024 * 1024
WINDOW = 16  # no run of this many plaintext bytes may appear in what is stored
_WORD = 8  # every WINDOW-byte run contains a whole 8-byte word at an offset divisible by 8

MARKER = b"S3GW-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()


class Plaintext:
    """A random period of 1 MiB, with ``MARKER`` in it, repeated as far as needed.

    Every upload is a prefix of the repetition, so all 16-byte windows of every
    upload are windows of the period read cyclically, and an index of the
    period's 8-byte words at offsets divisible by 8 finds any of them.
    """

    def __init__(self, period_length: int = MIB) -> None:
        assert period_length % _WORD == 0
        period = bytearray(os.urandom(period_length))
        for offset in (0, period_length // 3, period_length - len(MARKER)):
            period[offset : offset + len(MARKER)] = MARKER
        self.period = bytes(period)
        self._cyclic = self.period + self.period[:WINDOW]
        words = array("Q")
        words.frombytes(self.period)
        self._words = {word: index * _WORD for index, word in enumerate(words)}
        assert len(self._words) == len(words)  # 64-bit words of random data are distinct

    def prefix(self, length: int) -> bytes:
        repeats = -(-length // len(self.period))
        return (self.period * repeats)[:length]

    def windows_in(self, data: bytes) -> list[tuple[int, int]]:
        """(offset in ``data``, offset in the period) of every plaintext window found."""
        found: set[tuple[int, int]] = set()
        view = memoryview(data)
        for shift in range(_WORD):
            usable = (len(data) - shift) // _WORD * _WORD
            if usable <= 0:
                continue
            words = array("Q")
            words.frombytes(view[shift : shift + usable])
            if self._words.keys().isdisjoint(words):  # the fast path: one pass in C
                continue
            for index, word in enumerate(words):
                position = self._words.get(word)
                if position is None:
                    continue
                at = shift + index * _WORD
                for back in range(_WORD):  # the windows that contain this word
                    start, origin = at - back, (position - back) % len(self.period)
                    window = self._cyclic[origin : origin + WINDOW]
                    if start >= 0 and data[start : start + WINDOW] == window:
                        found.add((start, origin))
        return sorted(found)


def test_window_search_finds_any_window() -> None:
    """The search itself: without this, a broken search would make the test below pass."""
    plaintext = Plaintext(64 * 1024)
    stream = plaintext.prefix(3 * len(plaintext.period))
    rng = random.Random(1)
    starts = [0, 7, 8, len(plaintext.period) - WINDOW, len(plaintext.period) - 3]
    starts += [rng.randrange(len(stream) - WINDOW) for _ in range(50)]
    for start in starts:
        for pad in range(_WORD + 1):
            noise = os.urandom(pad)
            data = noise + stream[start : start + WINDOW] + os.urandom(3)
            origin = start % len(plaintext.period)
            assert (pad, origin) in plaintext.windows_in(data), (start, pad)
    assert plaintext.windows_in(os.urandom(MIB)) == []
    assert plaintext.windows_in(stream[100 : 100 + WINDOW - 1]) == []


# --------------------------------------------------------------------------- backend


@pytest.fixture(params=["moto", "rclone"])
def own_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend started for this test alone: all it holds afterwards came from it."""
    if request.param == "moto":
        backend = start_moto(tmp_path / "moto")
    else:
        backend = start_rclone(tmp_path / "rclone", tmp_path / "rclone" / "data")
    yield backend
    backend.stop()


@pytest.fixture
def own_gateway(own_backend: Backend, gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    gateway = gateway_factory(own_backend, fresh=True)
    yield gateway
    gateway.stop()


@dataclass(frozen=True)
class Stored:
    """One thing the backend holds: an object's body or headers, or a file."""

    name: str
    data: bytes


def everything_stored(backend: Backend) -> Iterator[Stored]:
    """Every object of every bucket (body, and headers with all metadata values) read
    directly from the backend, and for rclone every file under its data directory."""
    client = backend.client(config=Config(response_checksum_validation="when_required"))
    for bucket in client.list_buckets()["Buckets"]:
        name = bucket["Name"]
        # Nothing half-uploaded either: completed objects are all there is to read.
        assert not client.list_multipart_uploads(Bucket=name).get("Uploads")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                answer = client.get_object(Bucket=name, Key=item["Key"])
                yield Stored(f"s3://{name}/{item['Key']}", answer["Body"].read())
                headers = answer["ResponseMetadata"]["HTTPHeaders"]
                text = "\n".join(f"{k}: {v}" for k, v in headers.items())
                yield Stored(f"s3://{name}/{item['Key']} headers", text.encode())
    if backend.data_dir is not None:
        for path in sorted(backend.data_dir.rglob("*")):
            if path.is_file():
                yield Stored(str(path), path.read_bytes())


# --------------------------------------------------------------------------- uploads


def upload_everything(
    gateway: Gateway, bucket: str, plaintext: Plaintext, tmp_path: Path
) -> dict[str, bytes]:
    """Upload prefixes of the plaintext by every path and client; returns key -> plaintext."""
    uploads: dict[str, bytes] = {}

    def data(key: str, length: int) -> bytes:
        uploads[key] = plaintext.prefix(length)
        return uploads[key]

    def file_of(key: str, length: int) -> str:
        path = tmp_path / "files" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data(key, length))
        return str(path)

    # boto3 over HTTP: signed payloads, a body checked whole and a streamed one.
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="boto3/small", Body=data("boto3/small", 1000))
    s3.put_object(Bucket=bucket, Key="boto3/streamed", Body=data("boto3/streamed", 3 * MIB // 2))
    # boto3 over HTTPS: aws-chunked bodies with CRC32 trailers, single PUT and multipart.
    tls = gateway.https_client()
    tls.put_object(Bucket=bucket, Key="https/small", Body=data("https/small", 5000))
    tls.put_object(Bucket=bucket, Key="https/streamed", Body=data("https/streamed", 3 * MIB // 2))
    parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    body = io.BytesIO(data("https/multipart", 6 * MIB + 1234))
    tls.upload_fileobj(body, bucket, "https/multipart", Config=parts)
    # Server-side copies: the stored ciphertext is copied, REPLACE adds a re-wrapped envelope.
    for directive in ("COPY", "REPLACE"):
        key = f"copies/{directive.lower()}"
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": "boto3/streamed"},
            MetadataDirective=directive,
            Metadata={"replaced": "yes"} if directive == "REPLACE" else {},
        )
        uploads[key] = uploads["boto3/streamed"]
    # MinIO SDK: a single PUT, a multipart upload, and a presigned PUT sent with urllib.
    minio = minio_client(gateway)
    small = data("minio/put", 200_000)
    minio.put_object(bucket, "minio/put", io.BytesIO(small), len(small))
    path = file_of("minio/multipart", 6 * MIB + 5)
    minio.fput_object(bucket, "minio/multipart", path, part_size=5 * MIB)
    url = minio.presigned_put_object(bucket, "presigned", expires=timedelta(minutes=5))
    request = urllib.request.Request(
        url,
        data=data("presigned", 100_000),
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},  # not form data (moto)
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    # rclone as a client: a single PUT and a multipart upload.
    rclone = Rclone(tmp_path / "rclone-client", gateway)
    path = file_of("rclone/single", 1_200_000)
    rclone("copyto", path, f"gw:{bucket}/rclone/single", RCLONE_IGNORE_ETAG)
    path = file_of("rclone/multipart", 6 * MIB + 7)
    rclone("copyto", path, f"gw:{bucket}/rclone/multipart", *RCLONE_MULTIPART)
    # s3fs: a file written through its buffered writer.
    with s3fs_filesystem(gateway).open(f"{bucket}/s3fs/file", "wb") as out:
        out.write(data("s3fs/file", 300_000))
    return uploads


def test_no_plaintext_reaches_the_backend(
    own_backend: Backend, own_gateway: Gateway, tmp_path: Path
) -> None:
    plaintext = Plaintext()
    bucket = make_bucket(own_backend)
    uploads = upload_everything(own_gateway, bucket, plaintext, tmp_path)

    # Every upload is readable through the gateway: the backend holds all of them.
    s3 = own_gateway.client()
    for key, expected in uploads.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == expected, key

    stored = list(everything_stored(own_backend))
    names = {item.name for item in stored}
    assert {f"s3://{bucket}/{key}" for key in uploads} <= names
    assert sum(len(item.data) for item in stored) > sum(len(v) for v in uploads.values())
    leaks = {
        item.name: found[:3]
        for item in stored
        if (found := plaintext.windows_in(item.data)) or MARKER in item.data
    }
    assert leaks == {}, "plaintext found at (offset, offset in the plaintext's period)"

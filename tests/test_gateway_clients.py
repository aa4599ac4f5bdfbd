"""Real clients through the real gateway: boto3 over TLS (aws-chunked uploads with
CRC32 trailers), hand-built signed-chunk uploads, awscli, and s3transfer."""

from __future__ import annotations

import http.client
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from addons.bodycrypto import SMALL_UPLOAD
from crypto import ciphertext_length
from tests.harness import CHUNK_SIZE, GATEWAY_USER, AwsCli, Backend, Gateway
from tests.rawclient import (
    STREAMING_UNSIGNED_TRAILER,
    RawResponse,
    crc32_b64,
    crc32_trailer_body,
    pieces_of,
    send,
    sign,
    signed_chunked_put,
    stored_keys,
)

MIB = 1024 * 1024


def stored_body(backend: Backend, bucket: str, key: str) -> bytes:
    # Backends send checksums of the whole stored object; not what is tested here.
    client = backend.client(config=Config(response_checksum_validation="when_required"))
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def assert_stored_encrypted(backend: Backend, bucket: str, key: str, plaintext: bytes) -> None:
    ciphertext = stored_body(backend, bucket, key)
    assert len(ciphertext) == ciphertext_length(len(plaintext), CHUNK_SIZE)
    for offset in range(0, max(len(plaintext) - 32, 0), max(1, len(plaintext) // 16)):
        assert plaintext[offset : offset + 32] not in ciphertext


def record_requests(client: Any) -> list[tuple[str, dict[str, str]]]:
    """(method, headers) of every request the boto3 client sends, as sent."""
    sent: list[tuple[str, dict[str, str]]] = []

    def observe(request: Any, **_: object) -> None:
        headers = {
            name.lower(): value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        sent.append((request.method, headers))

    client.meta.events.register("before-send", observe)
    return sent


# --------------------------------------------------------------------------- aws-chunked

SIZES = [0, 1, 64 * 1024 - 1, 64 * 1024 + 1, 5 * MIB]


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
def test_boto3_https_upload_is_aws_chunked_with_crc32_trailer(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    s3 = gateway.https_client()
    sent = record_requests(s3)
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)

    method, headers = sent[-1]
    assert method == "PUT"
    assert headers["x-amz-content-sha256"] == STREAMING_UNSIGNED_TRAILER
    assert headers["content-encoding"] == "aws-chunked"
    assert headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="obj")["ContentLength"] == size
    assert_stored_encrypted(backend, bucket, "obj", data)


def trailer_request(
    gateway: Gateway, bucket: str, key: str, data: bytes, body: bytes, *, tls: bool = True
) -> tuple[str, dict[str, str]]:
    url = f"{gateway.https_url if tls else gateway.url}/{bucket}/{key}"
    headers = sign(
        "PUT",
        url,
        GATEWAY_USER,
        payload_hash=STREAMING_UNSIGNED_TRAILER,
        headers=[
            ("Content-Encoding", "aws-chunked"),
            ("X-Amz-Decoded-Content-Length", str(len(data))),
            ("X-Amz-Trailer", "x-amz-checksum-crc32"),
            ("X-Amz-Sdk-Checksum-Algorithm", "CRC32"),
            ("Content-Length", str(len(body))),
        ],
    )
    return url, headers


@pytest.mark.parametrize("size", [1, 300_000], ids=lambda s: f"{s}B")
def test_hand_built_crc32_trailer_round_trip(gateway: Gateway, bucket: str, size: int) -> None:
    """The same encoding built by hand; the control for the corrupted trailer below."""
    data = os.urandom(size)
    body = crc32_trailer_body(data)
    url, headers = trailer_request(gateway, bucket, "obj", data, body)
    response = send(url, "PUT", headers, pieces_of(body, 16 * 1024), ca_file=gateway.ca_cert_path)
    assert response.status == 200, response.body
    assert gateway.client().get_object(Bucket=bucket, Key="obj")["Body"].read() == data


def refused_upload(
    gateway: Gateway,
    size: int,
    code: str,
    status: int,
    send_upload: Callable[[], RawResponse],
    *,
    cut: bool,
) -> None:
    """Small uploads are checked whole and answered with the S3 error. Larger ones
    stream, and the backend never receives their last piece: a failure found at the
    end of the body (a digest) is still answered with the S3 error, one found while
    the client is still sending closes the connection (``cut``)."""
    mark = gateway.log_mark()
    if size > SMALL_UPLOAD and cut:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            send_upload()
        gateway.wait_for_output(rf"aborting PUT \S+/obj: {code}", since=mark)
        return
    response = send_upload()
    assert response.status == status, response.body
    assert f"<Code>{code}</Code>".encode() in response.body
    assert response.headers["x-amz-request-id"]
    if size > SMALL_UPLOAD:
        gateway.wait_for_output(rf"refusing PUT \S+/obj at the end of its body: {code}", since=mark)


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
@pytest.mark.parametrize("size", [1, 300_000, 2 * 1024 * 1024], ids=lambda s: f"{s}B")
def test_corrupted_crc32_trailer_is_refused(
    backend: Backend, gateway: Gateway, bucket: str, size: int, tls: bool
) -> None:
    data = os.urandom(size)
    body = crc32_trailer_body(data)
    good = f"x-amz-checksum-crc32:{crc32_b64(data)}".encode()
    bad = f"x-amz-checksum-crc32:{crc32_b64(data + b'!')}".encode()
    assert body.count(good) == 1 and len(bad) == len(good)
    body = body.replace(good, bad)
    url, headers = trailer_request(gateway, bucket, "obj", data, body, tls=tls)
    ca_file = gateway.ca_cert_path if tls else None
    refused_upload(
        gateway,
        size,
        "BadDigest",
        400,
        lambda: send(url, "PUT", headers, pieces_of(body, 16 * 1024), ca_file=ca_file),
        cut=False,  # the checksum is checked at the end of the body: answered
    )
    assert stored_keys(backend, bucket) == []
    assert gateway.alive()


def signed_chunk_request(
    gateway: Gateway, bucket: str, key: str, data: bytes
) -> tuple[str, dict[str, str], list[bytes]]:
    url = f"{gateway.url}/{bucket}/{key}"
    return url, *signed_chunked_put(url, data, GATEWAY_USER)


@pytest.mark.parametrize("size", [0, 5, 3 * 64 * 1024 + 17], ids=lambda s: f"{s}B")
def test_signed_chunks_round_trip(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    url, headers, chunks = signed_chunk_request(gateway, bucket, "obj", data)
    response = send(url, "PUT", headers, chunks)
    assert response.status == 200, response.body
    assert gateway.client().get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert_stored_encrypted(backend, bucket, "obj", data)


@pytest.mark.parametrize("size", [3 * 64 * 1024 + 17, 2 * 1024 * 1024 + 17], ids=lambda s: f"{s}B")
@pytest.mark.parametrize("tamper", ["signature", "data"])
def test_bad_chunk_signature_is_refused(
    backend: Backend, gateway: Gateway, bucket: str, tamper: str, size: int
) -> None:
    data = os.urandom(size)
    url, headers, chunks = signed_chunk_request(gateway, bucket, "obj", data)
    second = chunks[1]
    if tamper == "signature":
        marker = second.index(b"chunk-signature=") + len(b"chunk-signature=")
        flipped = b"0" if second[marker : marker + 1] != b"0" else b"1"
        chunks[1] = second[:marker] + flipped + second[marker + 1 :]
    else:
        chunks[1] = second[:-3] + bytes([second[-3] ^ 1]) + second[-2:]
    refused_upload(
        gateway,
        size,
        "SignatureDoesNotMatch",
        403,
        lambda: send(url, "PUT", headers, chunks),
        cut=True,  # the second chunk's signature, while the client sends the rest
    )
    assert stored_keys(backend, bucket) == []
    assert gateway.alive()


# --------------------------------------------------------------------------- awscli


@pytest.fixture(scope="module")
def single_put_cli(harness_dir: Path) -> AwsCli:
    """awscli uploading files up to 64 MiB with one PutObject (multipart is refused)."""
    return AwsCli(harness_dir / "aws-single-put", s3_settings={"multipart_threshold": "64MB"})


def test_awscli_cp_ls_head_rm(
    backend: Backend, gateway: Gateway, bucket: str, single_put_cli: AwsCli, tmp_path: Path
) -> None:
    aws = single_put_cli
    small, big = os.urandom(1000), os.urandom(20 * MIB + 3)
    up, down = tmp_path / "up", tmp_path / "down"
    up.mkdir()
    (up / "small.txt").write_bytes(small)
    (up / "big.bin").write_bytes(big)

    aws(gateway, "s3", "cp", str(up / "small.txt"), f"s3://{bucket}/small.txt", check=True)
    aws(gateway, "s3", "cp", str(up / "big.bin"), f"s3://{bucket}/dir/big.bin", check=True)
    assert_stored_encrypted(backend, bucket, "dir/big.bin", big)

    aws(gateway, "s3", "cp", "--recursive", f"s3://{bucket}/", str(down), check=True)
    assert (down / "small.txt").read_bytes() == small
    assert (down / "dir" / "big.bin").read_bytes() == big

    listing = aws(gateway, "s3", "ls", "--recursive", f"s3://{bucket}/", check=True).stdout
    assert sorted(line.split()[-1] for line in listing.splitlines()) == ["dir/big.bin", "small.txt"]

    head = aws(gateway, "s3api", "head-object", "--bucket", bucket, "--key", "dir/big.bin")
    assert head.returncode == 0, head.stderr
    assert json.loads(head.stdout)["ContentLength"] == len(big)

    aws(gateway, "s3", "rm", f"s3://{bucket}/small.txt", check=True)
    assert stored_keys(backend, bucket) == ["dir/big.bin"]


def test_listing_shows_plaintext_sizes(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x" * 1000)
    listing = s3.list_objects_v2(Bucket=bucket)
    assert [item["Size"] for item in listing["Contents"]] == [1000]


# --------------------------------------------------------------------------- s3transfer


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_upload_and_download_fileobj(gateway: Gateway, bucket: str, scheme: str) -> None:
    s3 = gateway.https_client() if scheme == "https" else gateway.client()
    sent = record_requests(s3)
    data = os.urandom(9 * MIB + 7)  # above s3transfer's default 8 MiB threshold
    single = TransferConfig(multipart_threshold=64 * MIB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "obj", Config=single)
    assert [method for method, _ in sent] == ["PUT"]

    sink = io.BytesIO()
    s3.download_fileobj(bucket, "obj", sink, Config=single)
    assert sink.getvalue() == data


def test_download_file_with_parallel_ranged_gets(
    gateway: Gateway, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(5 * MIB + 12345)
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    sent = record_requests(s3)
    # Parts not aligned to the gateway's chunks: most ranges start and end mid-chunk.
    config = TransferConfig(
        multipart_threshold=1 * MIB, multipart_chunksize=200_000, max_concurrency=8
    )
    s3.download_file(bucket, "obj", str(tmp_path / "obj"), Config=config)
    assert (tmp_path / "obj").read_bytes() == data
    ranges = [h["range"] for method, h in sent if method == "GET" and "range" in h]
    assert len(ranges) == -(-len(data) // 200_000)

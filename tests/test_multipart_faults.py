"""Faults during a multipart UploadPart never store a partial part.

The single-PUT cases of ``tests/test_faults.py``, for parts: an upload is
created through the gateway and a first good version of part 2 is uploaded,
then part 2 is sent again with a fault (client gone, body short of or beyond
its Content-Length, a bad or missing aws-chunked chunk, backend reset, gateway
killed). Afterwards ListParts, through the gateway and on the backend with its
own upload id, must show part 2 as it was (same ETag, same size); a retry of
part 2 must succeed and, once part 1 (5 MiB) is uploaded, the completed object
must decrypt to exactly part 1 followed by the retried part 2.

Part 1 comes last because rclone's S3 server writes parts into the stored
object in order as they arrive and cannot take back a part it has started to
write: a part cut mid-stream there blocks its part number for the rest of the
upload (``NotImplemented`` on the retry), whatever the gateway does. Parts
ahead of the next one it needs are buffered and replaceable, as on S3.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import pytest

from addons.s3.uploadid import UploadToken
from crypto import ciphertext_length
from tests.faultproxy import PASS, Direction, Fault, FaultProxy, Faulty, Kind
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_USER,
    Backend,
    Gateway,
    GatewayFactory,
    make_bucket,
)
from tests.rawclient import (
    exchange,
    send,
    signed_chunked_put,
    signed_put_head,
)
from tests.test_faults import CUT_ERRORS, assert_s3_xml, put_raw

SMALL = 200_000  # read whole by the gateway (<= 1 MiB)
LARGE = 3 * 1024 * 1024  # streamed
SIZES = pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
KEY = "obj"
FIRST_PART = 5 * 1024 * 1024  # S3's minimum for every part but the last
PART = 2


@dataclass
class Upload:
    """A multipart upload with a first version of part 2 stored."""

    backend: Backend
    bucket: str
    token: str  # the gateway's upload id
    previous: bytes  # the stored version of part 2
    etag: str  # its ETag

    @property
    def backend_upload_id(self) -> str:
        return UploadToken.decode(self.token).backend_upload_id

    def part_url(self, endpoint: str) -> str:
        """UploadPart of part 2 at ``endpoint`` (a gateway, or a proxy in front of one)."""
        return f"{endpoint}/{self.bucket}/{KEY}?partNumber={PART}&uploadId={self.token}"


def start_upload(gateway: Gateway, bucket: str) -> Upload:
    s3 = gateway.client()
    token: str = s3.create_multipart_upload(Bucket=bucket, Key=KEY)["UploadId"]
    previous = os.urandom(1000)
    answer = s3.upload_part(Bucket=bucket, Key=KEY, UploadId=token, PartNumber=PART, Body=previous)
    return Upload(gateway.backend, bucket, token, previous, answer["ETag"])


def assert_part_unchanged(gateway: Gateway, upload: Upload) -> None:
    """ListParts through the gateway and on the backend: part 2 is its previous version."""
    time.sleep(0.3)  # let an aborted upload finish failing on the backend
    listing = gateway.client().list_parts(Bucket=upload.bucket, Key=KEY, UploadId=upload.token)
    seen = [(p["PartNumber"], p["ETag"], p["Size"]) for p in listing.get("Parts", [])]
    assert seen == [(PART, upload.etag, len(upload.previous))], "ListParts through the gateway"
    direct = upload.backend.client().list_parts(
        Bucket=upload.bucket, Key=KEY, UploadId=upload.backend_upload_id
    )
    stored = [(p["PartNumber"], p["ETag"], p["Size"]) for p in direct.get("Parts", [])]
    size = ciphertext_length(len(upload.previous), CHUNK_SIZE)
    assert stored == [(PART, upload.etag, size)], "ListParts on the backend"


def complete(gateway: Gateway, upload: Upload, etag: str) -> bytes:
    """Upload part 1, complete with part 2 as ``etag``; returns part 1's plaintext."""
    s3 = gateway.client()
    bucket, token = upload.bucket, upload.token
    first = os.urandom(FIRST_PART)
    answer = s3.upload_part(Bucket=bucket, Key=KEY, UploadId=token, PartNumber=1, Body=first)
    parts = [{"PartNumber": 1, "ETag": answer["ETag"]}, {"PartNumber": PART, "ETag": etag}]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=KEY, UploadId=token, MultipartUpload={"Parts": parts}
    )
    return first


def retry_and_complete(gateway: Gateway, upload: Upload, data: bytes) -> None:
    """A good retry of part 2 succeeds; the object decrypts to part 1 + ``data``."""
    s3 = gateway.client()
    answer = s3.upload_part(
        Bucket=upload.bucket, Key=KEY, UploadId=upload.token, PartNumber=PART, Body=data
    )
    first = complete(gateway, upload, answer["ETag"])
    assert s3.get_object(Bucket=upload.bucket, Key=KEY)["Body"].read() == first + data


# --------------------------------------------------------------------------- client side


@SIZES
def test_client_disconnect_mid_part(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    upload = start_upload(gateway, bucket)
    new = os.urandom(size)
    with FaultProxy("127.0.0.1", gateway.port) as proxy:
        proxy.set_fault(Fault(Kind.DROP, Direction.UP, after_bytes=size // 2))
        with pytest.raises(CUT_ERRORS):
            put_raw(upload.part_url(proxy.url), new)
        assert proxy.faults_injected == 1
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)


@SIZES
def test_part_body_shorter_than_content_length(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    upload = start_upload(gateway, bucket)
    new = os.urandom(size)
    head = signed_put_head(upload.part_url(gateway.url), new, size, GATEWAY_USER)
    received = exchange(gateway.port, head + new[: size // 2], half_close=True)
    assert not received.startswith(b"HTTP/1.1 200"), received[:200]
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)


def test_part_body_longer_than_content_length(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    """Exactly Content-Length bytes are the part; the surplus is the next request,
    which is not HTTP and is refused."""
    upload = start_upload(gateway, bucket)
    new = os.urandom(5000)
    extra = b"\x00SURPLUS BYTES THAT ARE NOT A REQUEST\r\n\r\n"
    head = signed_put_head(upload.part_url(gateway.url), new, len(new), GATEWAY_USER)
    received = exchange(gateway.port, head + new + extra, half_close=False, timeout=5)
    assert received.startswith(b"HTTP/1.1 200"), received[:300]
    second = received.split(b"HTTP/1.1 ")[2:]  # whatever answered the surplus
    assert all(not answer.startswith(b"2") for answer in second), received
    s3 = gateway.client()
    listing = s3.list_parts(Bucket=bucket, Key=KEY, UploadId=upload.token)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listing] == [(PART, len(new))]
    first = complete(gateway, upload, listing[0]["ETag"])
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == first + new


@SIZES
@pytest.mark.parametrize("tampered", [1, -1], ids=["second-chunk", "final-chunk"])
def test_aws_chunked_part_with_bad_chunk_signature(
    backend: Backend, gateway: Gateway, bucket: str, size: int, tampered: int
) -> None:
    """A bad signature early, or on the final 0-chunk, after all the data has arrived."""
    upload = start_upload(gateway, bucket)
    new = os.urandom(size)
    url = upload.part_url(gateway.url)
    headers, chunks = signed_chunked_put(url, new, GATEWAY_USER)
    chunk = chunks[tampered]
    marker = chunk.index(b"chunk-signature=") + len(b"chunk-signature=")
    flipped = b"0" if chunk[marker : marker + 1] != b"0" else b"1"
    chunks[tampered] = chunk[:marker] + flipped + chunk[marker + 1 :]
    try:
        response = send(url, "PUT", headers, chunks)
    except CUT_ERRORS:
        assert size > SMALL  # streamed: refused by closing the connection
    else:
        assert_s3_xml(response, "SignatureDoesNotMatch", 403)
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)


@SIZES
def test_aws_chunked_part_missing_final_chunk(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    upload = start_upload(gateway, bucket)
    new = os.urandom(size)
    url = upload.part_url(gateway.url)
    headers, chunks = signed_chunked_put(url, new, GATEWAY_USER, final_chunk=False)
    # Found at the end of the body, so answered also when streamed.
    response = send(url, "PUT", headers, chunks)
    assert response.status == 400, response
    assert response.error()["Code"] in ("IncompleteBody", "InvalidRequest"), response.body
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)


def test_gateway_killed_mid_part(
    backend: Backend, gateway: Gateway, gateway_factory: GatewayFactory, bucket: str
) -> None:
    """SIGKILL of the gateway while it streams a part: the backend gets an incomplete
    request and keeps the part as it was; a gateway started again with the same
    configuration (here the default one: upload ids need no shared state) takes
    the upload over."""
    upload = start_upload(gateway, bucket)
    doomed = gateway_factory(backend, fresh=True)
    new = os.urandom(LARGE)
    head = signed_put_head(upload.part_url(doomed.url), new, len(new), GATEWAY_USER)
    with socket.create_connection(("127.0.0.1", doomed.port), timeout=30) as sock:
        sock.sendall(head + new[: LARGE // 2])
        time.sleep(0.3)  # the gateway has forwarded what it got
        doomed.process.process.kill()
        doomed.process.process.wait(10)
        with pytest.raises(OSError):
            for _ in range(64):  # the peer is gone: a write fails soon
                sock.sendall(new[LARGE // 2 : LARGE // 2 + 65536])
    doomed.stop()
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)


# --------------------------------------------------------------------------- backend side


@SIZES
def test_backend_reset_mid_part(faulty: Faulty, size: int) -> None:
    bucket = make_bucket(faulty.backend)
    gateway = faulty.gateway
    upload = start_upload(gateway, bucket)
    new = os.urandom(size)
    faulty.proxy.set_fault(Fault(Kind.RESET, Direction.UP, after_bytes=size // 2))
    try:
        response = put_raw(upload.part_url(gateway.url), new)
    except CUT_ERRORS:
        pass  # the client was still sending when the gateway closed the connection
    else:
        assert_s3_xml(response, "BadGateway", 502)
    assert faulty.proxy.faults_injected >= 1
    faulty.proxy.set_fault(PASS)
    assert_part_unchanged(gateway, upload)
    retry_and_complete(gateway, upload, new)

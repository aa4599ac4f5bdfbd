"""Multipart uploads through the real gateway, against real backends.

Parts are encrypted one frame each with the upload's data key, which travels
inside the upload id the gateway hands out: any gateway process holding the
keyring can take any request of an upload (docs/adr/0005).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from addons.s3.uploadid import TOKEN_PREFIX, UploadToken
from crypto import Envelope, ciphertext_length
from crypto.format import HEADER_LENGTH
from tests.harness import CHUNK_SIZE, GATEWAY_USER, AwsCli, Backend, Gateway, GatewayFactory
from tests.rawclient import signed_request

MIB = 1024 * 1024
SIZE = 20 * MIB + 12_345  # not a whole number of chunks: the last part is partial


def stored(backend: Backend, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    """The stored body and user metadata, read from the backend directly."""
    # Backends send checksums of the whole stored object; not what is tested here.
    client = backend.client(config=Config(response_checksum_validation="when_required"))
    answer = client.get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), {k.lower(): v for k, v in answer["Metadata"].items()}


def assert_stored_as_parts(
    backend: Backend, bucket: str, key: str, plaintext: bytes, part_sizes: list[int]
) -> None:
    """Ciphertext at rest: one frame per part, numbered 1..n, under a multipart envelope."""
    body, metadata = stored(backend, bucket, key)
    assert Envelope.decode(metadata["s3gw"]).multipart
    assert len(body) == sum(ciphertext_length(n, CHUNK_SIZE) for n in part_sizes)
    offset = 0
    for number, size in enumerate(part_sizes, start=1):
        header = body[offset : offset + HEADER_LENGTH]
        assert header[:4] == b"S3G1"
        assert struct.unpack(">H", header[6:8])[0] == number
        offset += ciphertext_length(size, CHUNK_SIZE)
    for start in range(0, len(plaintext) - 32, len(plaintext) // 16):
        assert plaintext[start : start + 32] not in body


def parts_of(size: int, part_size: int) -> list[int]:
    return [min(part_size, size - start) for start in range(0, size, part_size)]


def transfer(part_size: int) -> TransferConfig:
    # Eight threads: parts reach the gateway out of order.
    return TransferConfig(
        multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=8
    )


def upload(s3: Any, bucket: str, key: str, parts: list[bytes]) -> str:
    """Create, upload ``parts`` as 1..n and complete; returns the upload id used."""
    upload_id: str = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        for n, body in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    return upload_id


def error_code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


# --------------------------------------------------------------------------- SDK transfers


@pytest.mark.parametrize(
    ("part_size", "scheme"), [(5 * MIB, "http"), (8 * MIB, "https")], ids=["5MiB", "8MiB-https"]
)
def test_transfer_round_trip_full_and_ranged(
    backend: Backend, gateway: Gateway, bucket: str, part_size: int, scheme: str
) -> None:
    """boto3's transfer manager (over HTTPS: aws-chunked parts with CRC32 trailers)."""
    s3 = gateway.https_client() if scheme == "https" else gateway.client()
    data = os.urandom(SIZE)
    s3.upload_fileobj(io.BytesIO(data), bucket, "obj", Config=transfer(part_size))

    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == SIZE
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    boundary = part_size  # plaintext offset where part 2 starts
    for first, last in [
        (0, 0),
        (boundary - 1, boundary),  # the last byte of part 1 and the first of part 2
        (boundary - 70_000, 2 * boundary + 70_000),  # spans three parts
        (CHUNK_SIZE - 3, CHUNK_SIZE + 3),
        (SIZE - 10, SIZE - 1),
    ]:
        got = s3.get_object(Bucket=bucket, Key="obj", Range=f"bytes={first}-{last}")
        assert got["ContentRange"] == f"bytes {first}-{last}/{SIZE}"
        assert got["Body"].read() == data[first : last + 1]
    suffix = s3.get_object(Bucket=bucket, Key="obj", Range="bytes=-100000")
    assert suffix["Body"].read() == data[-100_000:]
    assert_stored_as_parts(backend, bucket, "obj", data, parts_of(SIZE, part_size))


def test_upload_file_and_download_file(gateway: Gateway, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    (tmp_path / "up").write_bytes(data)
    s3 = gateway.client()
    s3.upload_file(str(tmp_path / "up"), bucket, "file", Config=transfer(8 * MIB))
    # Parallel ranged GETs of 5 MiB, not aligned to the 8 MiB parts.
    s3.download_file(bucket, "file", str(tmp_path / "down"), Config=transfer(5 * MIB))
    assert (tmp_path / "down").read_bytes() == data


def test_awscli_cp_with_default_multipart_settings(
    backend: Backend, gateway: Gateway, bucket: str, aws_cli: AwsCli, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)  # above awscli's 8 MB threshold: 8 MiB parts
    (tmp_path / "up.bin").write_bytes(data)
    aws_cli(gateway, "s3", "cp", str(tmp_path / "up.bin"), f"s3://{bucket}/cli.bin", check=True)
    aws_cli(gateway, "s3", "cp", f"s3://{bucket}/cli.bin", str(tmp_path / "down.bin"), check=True)
    assert (tmp_path / "down.bin").read_bytes() == data
    assert_stored_as_parts(backend, bucket, "cli.bin", data, parts_of(SIZE, 8 * MIB))


# --------------------------------------------------------------------------- the upload id


def test_upload_ids_are_gateway_tokens_any_replica_accepts(
    backend: Backend, gateway: Gateway, gateway_factory: GatewayFactory, bucket: str
) -> None:
    """Create on one process, parts alternately on both, Complete on the other."""
    # Same configuration (and keyring), another process.
    other = gateway_factory(backend, {"max_buffered_body": 8 * MIB})
    assert other.pid != gateway.pid
    clients = [gateway.client(), other.client()]
    parts = [os.urandom(5 * MIB) for _ in range(3)] + [os.urandom(1000)]
    upload_id = clients[0].create_multipart_upload(Bucket=bucket, Key="shared")["UploadId"]
    assert upload_id.startswith(TOKEN_PREFIX)
    etags = [
        clients[n % 2].upload_part(
            Bucket=bucket, Key="shared", UploadId=upload_id, PartNumber=n, Body=body
        )["ETag"]
        for n, body in enumerate(parts, start=1)
    ]
    clients[1].complete_multipart_upload(
        Bucket=bucket,
        Key="shared",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    for client in clients:
        assert client.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"".join(parts)


def test_foreign_or_tampered_upload_ids_are_no_such_upload(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    s3 = gateway.client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    token = UploadToken.decode(upload_id)
    middle = len(upload_id) // 2
    flipped = (
        upload_id[:middle] + ("A" if upload_id[middle] != "A" else "B") + upload_id[middle + 1 :]
    )
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in listed] == [token.backend_upload_id]  # the backend's ids
    for key, candidate in [
        ("k", flipped),
        ("k", token.backend_upload_id),  # a raw backend id carries no data key
        ("other-key", upload_id),  # a token is bound to its object key
        ("k", TOKEN_PREFIX + "AAAA"),
    ]:
        with pytest.raises(ClientError) as caught:
            s3.upload_part(Bucket=bucket, Key=key, UploadId=candidate, PartNumber=1, Body=b"x")
        assert error_code(caught) == "NoSuchUpload"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as caught:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=flipped)
    assert error_code(caught) == "NoSuchUpload"
    # Uploads found with ListMultipartUploads can still be aborted by their backend id.
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=token.backend_upload_id)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_part_uploaded_twice_abort_and_resume_with_list_parts(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    s3 = gateway.client()
    first, second, last = os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(123)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=1, Body=first)
    if backend.name == "rclone":
        # rclone cannot replace a part it has stored, and a part's ciphertext always
        # differs (fresh salt); the backend's refusal reaches the client as it is.
        with pytest.raises(ClientError) as refused:
            s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=1, Body=first)
        assert error_code(refused) == "NotImplemented"
        second = first
    else:
        s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=1, Body=second)
    s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=2, Body=last)

    # Resume as a client would: learn the parts from ListParts, then complete.
    listing = s3.list_parts(Bucket=bucket, Key="obj", UploadId=upload_id)
    assert listing["UploadId"] == upload_id
    assert [(p["PartNumber"], p["Size"]) for p in listing["Parts"]] == [(1, 5 * MIB), (2, 123)]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="obj",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listing["Parts"]]
        },
    )
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == second + last

    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=aborted, PartNumber=1, Body=b"x" * 10)
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted)
    with pytest.raises(ClientError) as caught:
        s3.list_parts(Bucket=bucket, Key="gone", UploadId=aborted)
    assert error_code(caught) == "NoSuchUpload"


def test_uneven_parts(backend: Backend, gateway: Gateway, bucket: str) -> None:
    """Parts of different sizes (whole chunks each) read back whole; ranges that
    need a layout the parts do not have are refused before anything is sent."""
    s3 = gateway.client()
    parts = [os.urandom(6 * MIB), os.urandom(5 * MIB), os.urandom(7 * MIB), os.urandom(99)]
    upload(s3, bucket, "uneven", parts)
    data = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="uneven")["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="uneven")["ContentLength"] == len(data)
    got = s3.get_object(Bucket=bucket, Key="uneven", Range="bytes=10-20")
    assert got["Body"].read() == data[10:21]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="uneven", Range=f"bytes={15 * MIB}-{15 * MIB + 9}")
    assert error_code(caught) == "NotImplemented"

    # Without a part count from the backend (rclone), sizes need parts of one size.
    parts = [os.urandom(8 * MIB), os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(99)]
    upload(s3, bucket, "odd", parts)
    if backend.name == "rclone":
        with pytest.raises(ClientError) as caught:
            s3.head_object(Bucket=bucket, Key="odd")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    else:
        assert s3.head_object(Bucket=bucket, Key="odd")["ContentLength"] == 18 * MIB + 99
        assert s3.get_object(Bucket=bucket, Key="odd")["Body"].read() == b"".join(parts)


def test_part_number_reads(backend: Backend, gateway: Gateway, bucket: str) -> None:
    """Backends that ignore ?partNumber answer with the whole object, and so does the
    gateway; moto's HEAD honours it and gets the part's plaintext size."""
    s3 = gateway.client()
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    upload(s3, bucket, "parts", parts)
    head = s3.head_object(Bucket=bucket, Key="parts", PartNumber=2)
    expected = 1000 if "PartsCount" in head else 5 * MIB + 1000
    assert head["ContentLength"] == expected
    got = s3.get_object(Bucket=bucket, Key="parts", PartNumber=1)["Body"].read()
    assert got in (parts[0], b"".join(parts))


# --------------------------------------------------------------------------- Complete


def test_complete_refuses_what_s3_refuses(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    small = s3.upload_part(
        Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=os.urandom(MIB)
    )["ETag"]
    tail = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"x")[
        "ETag"
    ]

    def complete(parts: list[tuple[int, str]]) -> str:
        with pytest.raises(ClientError) as caught:
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key="k",
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )
        return error_code(caught)

    assert complete([(2, tail), (1, small)]) == "InvalidPartOrder"
    assert complete([(1, small), (1, small)]) == "InvalidPartOrder"
    assert complete([(1, small), (2, tail)]) == "EntityTooSmall"
    assert complete([(1, tail), (2, tail)]) == "InvalidPart"  # wrong ETag
    assert complete([(1, small), (3, tail)]) == "InvalidPart"  # a gap, or an unknown part
    for body in [b"<CompleteMultipartUpload><Part>", b"not xml", b"<Other/>"]:
        answer = signed_request(
            gateway.url, GATEWAY_USER, "POST", f"/{bucket}/k?uploadId={upload_id}", body=body
        )
        assert answer.status == 400 and answer.error()["Code"] == "MalformedXML", answer.body
    # Refused completions leave the upload as it was.
    listing = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in listing["Parts"]] == [(1, MIB), (2, 1)]
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)


def test_parts_must_hold_whole_chunks(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etags = [
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=os.urandom(size)
        )["ETag"]
        for n, size in [(1, 5 * MIB + 1), (2, 10)]
    ]
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
            },
        )
    assert error_code(caught) == "InvalidPart"
    assert "multiple of 65536 bytes" in caught.value.response["Error"]["Message"]


def test_create_checks_metadata_and_complete_body_size(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    with pytest.raises(ClientError) as caught:
        s3.create_multipart_upload(Bucket=bucket, Key="k", Metadata={"s3gw": "v=1"})
    assert error_code(caught) == "InvalidArgument"
    with pytest.raises(ClientError) as caught:
        s3.create_multipart_upload(Bucket=bucket, Key="k", Metadata={"big": "x" * 2000})
    assert error_code(caught) == "MetadataTooLarge"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    answer = signed_request(
        gateway.url,
        GATEWAY_USER,
        "POST",
        f"/{bucket}/k?uploadId={upload_id}",
        body=b" " * (5 * MIB),
    )
    assert answer.status == 400 and answer.error()["Code"] == "MaxMessageLengthExceeded"


def test_upload_part_copy_is_refused(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="source", Body=b"x" * 100)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    with pytest.raises(ClientError) as caught:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="k",
            UploadId=upload_id,
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "source"},
        )
    assert error_code(caught) == "NotImplemented"
    assert "re-encrypted" in caught.value.response["Error"]["Message"]


@pytest.mark.slow
def test_awscli_cp_100_mib(
    backend: Backend, gateway: Gateway, bucket: str, aws_cli: AwsCli, tmp_path: Path
) -> None:
    size = 100 * MIB + 1
    data = os.urandom(size)
    (tmp_path / "up.bin").write_bytes(data)
    aws_cli(gateway, "s3", "cp", str(tmp_path / "up.bin"), f"s3://{bucket}/big.bin", check=True)
    aws_cli(gateway, "s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "down.bin"), check=True)
    assert (tmp_path / "down.bin").read_bytes() == data
    assert_stored_as_parts(backend, bucket, "big.bin", data, parts_of(size, 8 * MIB))

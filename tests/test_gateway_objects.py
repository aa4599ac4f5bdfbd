"""Object round trips through the real gateway, against real backends."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from crypto import Envelope, ciphertext_length
from tests.harness import CHUNK_SIZE, Backend, Gateway

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * 1024 * 1024]


def _direct(backend: Backend) -> object:
    # Backends send checksums of the whole stored object; not what we test here.
    return backend.client(config=Config(response_checksum_validation="when_required"))


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
def test_round_trip_is_byte_identical_and_stored_encrypted(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    plaintext = os.urandom(size)
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="obj", Body=plaintext)

    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == plaintext
    assert got["ContentLength"] == size
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"

    stored = _direct(backend).get_object(Bucket=bucket, Key="obj")  # type: ignore[attr-defined]
    ciphertext = stored["Body"].read()
    assert len(ciphertext) == ciphertext_length(size, CHUNK_SIZE)
    if size >= 16:
        for offset in range(0, size - 16, max(1, size // 64)):
            assert plaintext[offset : offset + 16] not in ciphertext
    metadata = {k.lower(): v for k, v in stored["Metadata"].items()}
    envelope = Envelope.decode(metadata["s3gw"])
    assert envelope.frame is not None and envelope.frame.plaintext_length == size

    s3.delete_object(Bucket=bucket, Key="obj")
    with pytest.raises(ClientError) as caught:
        _direct(backend).head_object(Bucket=bucket, Key="obj")  # type: ignore[attr-defined]
    assert caught.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_user_metadata_passes_and_envelope_is_hidden(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    s3 = gateway.client()
    s3.put_object(
        Bucket=bucket,
        Key="meta",
        Body=b"x" * 100,
        Metadata={"owner": "team-a", "purpose": "backup"},
        ContentType="application/x-test",
    )
    for response in (
        s3.head_object(Bucket=bucket, Key="meta"),
        s3.get_object(Bucket=bucket, Key="meta"),
    ):
        metadata = {k.lower(): v for k, v in response["Metadata"].items()}
        assert metadata == {"owner": "team-a", "purpose": "backup"}
        assert response["ContentType"] == "application/x-test"
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert not any(name.startswith("x-amz-checksum") for name in headers)


def test_reserved_metadata_key_is_refused(gateway: Gateway, bucket: str) -> None:
    with pytest.raises(ClientError) as caught:
        gateway.client().put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"s3gw": "v=1"})
    assert caught.value.response["Error"]["Code"] == "InvalidArgument"


def test_unencrypted_objects_are_served_and_labelled(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    legacy = os.urandom(200_000)
    _direct(backend).put_object(Bucket=bucket, Key="legacy", Body=legacy)  # type: ignore[attr-defined]
    got = gateway.client().get_object(Bucket=bucket, Key="legacy")
    assert got["Body"].read() == legacy
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "none"
    ranged = gateway.client().get_object(Bucket=bucket, Key="legacy", Range="bytes=70000-140000")
    assert ranged["Body"].read() == legacy[70000:140001]
    assert ranged["ContentRange"] == f"bytes 70000-140000/{len(legacy)}"


def test_large_object_sha256(gateway: Gateway, bucket: str) -> None:
    data = os.urandom(1024 * 1024) * 24  # 24 MiB, several reads per chunk boundary
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    digest = hashlib.sha256()
    for piece in s3.get_object(Bucket=bucket, Key="big")["Body"].iter_chunks(1 << 20):
        digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_unsupported_operations_fail_closed(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    with pytest.raises(ClientError) as caught:
        s3.select_object_content(
            Bucket=bucket,
            Key="obj",
            Expression="SELECT * FROM S3Object",
            ExpressionType="SQL",
            InputSerialization={"CSV": {}},
            OutputSerialization={"CSV": {}},
        )
    assert caught.value.response["Error"]["Code"] == "NotImplemented"


@pytest.mark.parametrize("quiet", [False, True])
def test_delete_objects_batch(backend: Backend, gateway: Gateway, bucket: str, quiet: bool) -> None:
    s3 = gateway.client()
    keys = [f"batch/{i}" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    answer = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in [*keys[:3], "batch/missing"]], "Quiet": quiet},
    )
    assert not answer.get("Errors")
    deleted = {d["Key"] for d in answer.get("Deleted", [])}
    if quiet and backend.name == "moto":
        # moto lists deleted keys even in quiet mode (AWS does not): the gateway
        # passes the backend's answer on unchanged.
        assert deleted == {*keys[:3], "batch/missing"}
    else:
        assert deleted == (set() if quiet else {*keys[:3], "batch/missing"})
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert remaining == keys[3:]

"""GetObjectAttributes through the real gateway: the answer S3 gives for the plaintext.

Each object is stored twice in one bucket: encrypted through the gateway, and
as plaintext directly on the backend (the twin). The gateway's answer for the
encrypted object must equal the backend's answer for the twin, except for the
ETag, which is the backend's everywhere (ADR 0006). moto implements the
operation; rclone's ``serve s3`` answers it with a 500, which the gateway
passes on as it is.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from addons.backend import OBJECT_CHANGED
from addons.s3.multipartxml import MAX_BACKEND_DOCUMENT
from tests.faultproxy import Fault, FaultProxy, Kind
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_USER,
    Backend,
    Gateway,
    GatewayFactory,
    make_bucket,
)
from tests.rawclient import signed_request
from tests.test_gateway_multipart import upload

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
ASKED = [["ObjectSize"], ["StorageClass"], ["Checksum"], ["ObjectParts", "ObjectSize"], ALL]
PART = 5 * 1024 * 1024
# The gateway verifies a client's checksums over the plaintext but does not store
# them (nor does it show the backend's, of ciphertext): twins are stored without.
NO_CHECKSUM = Config(request_checksum_calculation="when_required")


def _attributes(s3: Any, bucket: str, key: str, asked: list[str], **extra: Any) -> dict[str, Any]:
    answer = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=asked, **extra)
    answer.pop("ResponseMetadata")
    answer.pop("LastModified")
    return dict(answer)


@pytest.fixture
def moto_gateway(moto_backend: Backend, gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory(moto_backend)


@pytest.mark.parametrize("asked", ASKED, ids=["+".join(a) for a in ASKED])
@pytest.mark.parametrize("size", [0, 1000, CHUNK_SIZE + 1])
def test_single_put_object_answers_as_its_plaintext_twin(
    moto_backend: Backend, moto_gateway: Gateway, size: int, asked: list[str]
) -> None:
    bucket = make_bucket(moto_backend, prefix="attrs")
    data = os.urandom(size)
    s3, direct = moto_gateway.client(), moto_backend.client(config=NO_CHECKSUM)
    s3.put_object(Bucket=bucket, Key="enc", Body=data)
    direct.put_object(Bucket=bucket, Key="twin", Body=data)

    through_gateway = _attributes(s3, bucket, "enc", asked)
    expected = _attributes(direct, bucket, "twin", asked)
    if "ETag" in asked:
        stored_etag = direct.head_object(Bucket=bucket, Key="enc")["ETag"].strip('"')
        assert through_gateway.pop("ETag") == stored_etag
        expected.pop("ETag")
    assert through_gateway == expected
    if "ObjectSize" in asked:
        assert through_gateway["ObjectSize"] == size


def test_multipart_object_answers_as_its_plaintext_twin(
    moto_backend: Backend, moto_gateway: Gateway
) -> None:
    bucket = make_bucket(moto_backend, prefix="attrs")
    parts = [os.urandom(PART), os.urandom(1000)]
    s3, direct = moto_gateway.client(), moto_backend.client(config=NO_CHECKSUM)
    upload(s3, bucket, "enc", parts)
    upload(direct, bucket, "twin", parts)
    through_gateway = _attributes(s3, bucket, "enc", ALL)
    expected = _attributes(direct, bucket, "twin", ALL)
    # moto reports a checksum type for a multipart object that has no checksum.
    assert expected.pop("Checksum", {}).keys() <= {"ChecksumType"}
    assert through_gateway.pop("ETag").endswith("-2") and expected.pop("ETag").endswith("-2")
    assert through_gateway == expected
    assert through_gateway["ObjectSize"] == PART + 1000


def test_ciphertext_checksums_are_not_shown(moto_backend: Backend, moto_gateway: Gateway) -> None:
    """The client's checksum is verified over the plaintext and not stored; a checksum
    the backend keeps of the ciphertext (S3 computes one by default) is not shown."""
    bucket = make_bucket(moto_backend, prefix="attrs")
    s3, direct = moto_gateway.client(), moto_backend.client()
    s3.put_object(Bucket=bucket, Key="enc", Body=b"x" * 1000, ChecksumAlgorithm="CRC32")
    # What a backend that checksums every upload holds: a checksum of the ciphertext.
    stored = direct.head_object(Bucket=bucket, Key="enc")
    direct.copy_object(
        Bucket=bucket,
        Key="enc",
        CopySource={"Bucket": bucket, "Key": "enc"},
        ChecksumAlgorithm="CRC32",
        MetadataDirective="REPLACE",
        Metadata=stored["Metadata"],  # the envelope
        ContentType=stored["ContentType"],
    )
    assert "Checksum" in _attributes(direct, bucket, "enc", ALL)
    through_gateway = _attributes(s3, bucket, "enc", ALL)
    assert "Checksum" not in through_gateway
    assert through_gateway["ObjectSize"] == 1000
    assert s3.get_object(Bucket=bucket, Key="enc")["Body"].read() == b"x" * 1000


def test_unencrypted_objects_and_versions_answer_as_stored(
    moto_backend: Backend, moto_gateway: Gateway
) -> None:
    bucket = make_bucket(moto_backend, prefix="attrs")
    s3, direct = moto_gateway.client(), moto_backend.client()
    direct.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    # Stored before the gateway, with a checksum of its plaintext: shown as it is.
    direct.put_object(Bucket=bucket, Key="legacy", Body=b"p" * 77, ChecksumAlgorithm="CRC32")
    assert _attributes(s3, bucket, "legacy", ALL) == _attributes(direct, bucket, "legacy", ALL)

    first = s3.put_object(Bucket=bucket, Key="versioned", Body=b"a" * 10)["VersionId"]
    s3.put_object(Bucket=bucket, Key="versioned", Body=b"b" * 20_000)
    old = _attributes(s3, bucket, "versioned", ["ObjectSize"], VersionId=first)
    latest = _attributes(s3, bucket, "versioned", ["ObjectSize"])
    assert old["ObjectSize"] == 10 and old["VersionId"] == first
    assert latest["ObjectSize"] == 20_000 and latest["VersionId"] != first
    assert "ETag" not in old and "ETag" not in latest  # asked for by the gateway only


def test_missing_objects_answer_as_the_backend(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    for s3 in (backend.client(), gateway.client()):
        with pytest.raises(ClientError) as caught:
            _attributes(s3, bucket, "missing", ["ObjectSize"])
        assert caught.value.response["Error"]["Code"] == "NoSuchKey"


def test_a_backend_answering_with_the_object_gets_bad_gateway(
    rclone_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """rclone's serve s3 ignores ?attributes and sends the (encrypted) object."""
    gateway = gateway_factory(rclone_backend)
    bucket = make_bucket(rclone_backend, prefix="attrs")
    big = os.urandom(MAX_BACKEND_DOCUMENT + 1)  # too large to be buffered as a document
    for key, body in (("small", b"x" * 100), ("big", big)):
        gateway.client().put_object(Bucket=bucket, Key=key, Body=body)
        for asked in (["ETag"], ALL):
            answer = signed_request(
                gateway.url,
                GATEWAY_USER,
                "GET",
                f"/{bucket}/{key}?attributes",
                headers=[("x-amz-object-attributes", ",".join(asked))],
            )
            assert answer.status == 502, answer.body[:200]
            error = answer.error()
            assert error["Code"] == "BadGateway" and error["RequestId"]
            assert answer.headers["x-amz-request-id"] == error["RequestId"]


def test_an_object_replaced_between_answer_and_head_gets_internal_error(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """The sizes would be translated with another object's shape: a retryable error."""
    target = urlsplit(moto_backend.endpoint_url)
    assert target.hostname is not None and target.port is not None
    with FaultProxy(target.hostname, target.port) as proxy:
        gateway = gateway_factory(moto_backend, {"backend": {"url": proxy.url}})
        bucket = make_bucket(moto_backend, prefix="attrs")
        s3 = gateway.client(config=Config(retries={"total_max_attempts": 1}))
        s3.put_object(Bucket=bucket, Key="k", Body=b"a" * 10)
        # Every piece waits a second each way: the backend answers about 1 s after
        # the request, and the gateway reads that answer about 1 s later.
        proxy.set_fault(Fault(Kind.DELAY, delay=1.0))
        outcome: dict[str, Any] = {}

        def ask() -> None:
            try:
                outcome["answer"] = _attributes(s3, bucket, "k", ["ObjectSize"])
            except ClientError as error:
                outcome["error"] = error.response

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(1.5)
        moto_backend.client().put_object(Bucket=bucket, Key="k", Body=b"b" * 20_000)
        asking.join(60)
        error = outcome["error"]["Error"]
        assert (error["Code"], error["Message"]) == ("InternalError", OBJECT_CHANGED)
        proxy.set_fault(Fault())
        # The retry SDKs make of an InternalError sees the object that is there now,
        # stored directly, so unencrypted: its size as stored.
        assert _attributes(s3, bucket, "k", ["ObjectSize"]) == {"ObjectSize": 20_000}

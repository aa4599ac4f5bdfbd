"""Per-bucket policies (``bucket_policies``) through the real gateway, on real backends.

One gateway per backend serves three kinds of bucket: ``pass-*`` (passthrough),
``deny-*`` (refuse) and everything else (encrypt, the default). Plaintext
reads are off in that gateway, so the tests also show that passthrough buckets
serve plaintext anyway. What reached the backend is checked on the backend
directly. See docs/adr/0007-per-bucket-policy.md.
"""

from __future__ import annotations

import copy
import io
import os
import signal
from typing import Any

import pytest
import yaml
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from addons.s3.uploadid import TOKEN_PREFIX
from crypto import ciphertext_length
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_USER,
    UNKNOWN_USER,
    Backend,
    Credentials,
    Gateway,
    GatewayFactory,
    make_bucket,
)
from tests.rawclient import send, sign, stored_keys

MIB = 1024 * 1024
POLICIES = {
    "bucket_policies": {"pass-*": "passthrough", "deny-*": "refuse"},
    "encryption": {"allow_plaintext_reads": False},
}


@pytest.fixture
def policy_gateway(backend: Backend, gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory(backend, POLICIES)


def direct(backend: Backend) -> Any:
    # Backends send checksums of the whole stored object; not what is tested here.
    return backend.client(config=Config(response_checksum_validation="when_required"))


def stored(backend: Backend, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    answer = direct(backend).get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), {k.lower(): v for k, v in answer["Metadata"].items()}


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"].get("Message", ""),
    )


def test_passthrough_put_stores_exact_plaintext(backend: Backend, policy_gateway: Gateway) -> None:
    bucket = make_bucket(backend, "pass")
    s3 = policy_gateway.client()
    sizes = {"empty": 0, "small": 1000, "chunks": 3 * CHUNK_SIZE + 5, "streamed": 2 * MIB + 7}
    data = {key: os.urandom(size) for key, size in sizes.items()}
    for key, body in data.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"m": key})
    for key, body in data.items():
        at_rest, metadata = stored(backend, bucket, key)
        assert at_rest == body
        assert metadata == {"m": key}  # no envelope
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body
        assert got["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "none"
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(body)
    ranged = s3.get_object(Bucket=bucket, Key="chunks", Range="bytes=70000-140000")
    assert ranged["Body"].read() == data["chunks"][70000:140001]
    # boto3 over HTTPS: an aws-chunked body with a CRC32 trailer, decoded and verified.
    chunked = os.urandom(300_000)
    policy_gateway.https_client().put_object(Bucket=bucket, Key="aws-chunked", Body=chunked)
    assert stored(backend, bucket, "aws-chunked")[0] == chunked
    sizes["aws-chunked"] = len(chunked)
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == sizes
    with pytest.raises(ClientError) as caught:  # a forged envelope would be "decrypted"
        s3.put_object(Bucket=bucket, Key="forged", Body=b"x", Metadata={"s3gw": "v=1"})
    assert error_of(caught)[0] == "InvalidArgument"


def test_passthrough_multipart_stores_exact_plaintext(
    backend: Backend, policy_gateway: Gateway
) -> None:
    bucket = make_bucket(backend, "pass")
    s3 = policy_gateway.client()
    data = os.urandom(11 * MIB + 123)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "mp", Config=config)
    assert stored(backend, bucket, "mp")[0] == data
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
    ranged = s3.get_object(Bucket=bucket, Key="mp", Range="bytes=5242000-5243000")
    assert ranged["Body"].read() == data[5242000:5243001]
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("mp", len(data))]
    # The backend's own upload id, not a gateway token.
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="ids")["UploadId"]
    assert not upload_id.startswith(TOKEN_PREFIX)
    s3.abort_multipart_upload(Bucket=bucket, Key="ids", UploadId=upload_id)


def test_passthrough_still_decrypts_objects_written_encrypted(
    backend: Backend, gateway: Gateway, policy_gateway: Gateway
) -> None:
    """The same bucket, first under the default policy (encrypt), then passthrough."""
    bucket = make_bucket(backend, "pass")
    data = os.urandom(200_000)
    gateway.client().put_object(Bucket=bucket, Key="old", Body=data)
    assert stored(backend, bucket, "old")[1]["s3gw"]  # encrypted at rest
    s3 = policy_gateway.client()
    got = s3.get_object(Bucket=bucket, Key="old")
    assert got["Body"].read() == data
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"
    assert s3.head_object(Bucket=bucket, Key="old")["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket=bucket, Key="old", Range="bytes=100000-100009")
    assert ranged["Body"].read() == data[100000:100010]


def test_encrypt_bucket_keeps_refusing_plaintext_reads(
    backend: Backend, policy_gateway: Gateway
) -> None:
    bucket = make_bucket(backend)
    direct(backend).put_object(Bucket=bucket, Key="legacy", Body=b"stored before")
    s3 = policy_gateway.client()
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="legacy")
    assert error_of(caught)[:2] == ("AccessDenied", 403)
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="new", Body=data)
    at_rest, metadata = stored(backend, bucket, "new")
    assert "s3gw" in metadata and len(at_rest) == ciphertext_length(len(data), CHUNK_SIZE)
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed}["new"] == len(data)


def test_refused_bucket_is_access_denied_and_nothing_reaches_the_backend(
    backend: Backend, policy_gateway: Gateway
) -> None:
    bucket = make_bucket(backend, "deny")
    direct(backend).put_object(Bucket=bucket, Key="there", Body=b"kept")
    s3 = policy_gateway.client()
    attempts = {
        "PutObject": lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"data"),
        "GetObject": lambda: s3.get_object(Bucket=bucket, Key="there"),
        "ListObjectsV2": lambda: s3.list_objects_v2(Bucket=bucket),
        "DeleteObject": lambda: s3.delete_object(Bucket=bucket, Key="there"),
        "CreateMultipartUpload": lambda: s3.create_multipart_upload(Bucket=bucket, Key="k"),
        # No such bucket on the backend: the gateway answers, not the backend.
        "GetObject elsewhere": lambda: s3.get_object(Bucket="deny-missing-bucket", Key="k"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ClientError) as caught:
            attempt()
        assert error_of(caught)[:2] == ("AccessDenied", 403), name
        assert caught.value.response["ResponseMetadata"]["RequestId"], name
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="there")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert stored_keys(backend, bucket) == ["there"]
    # A copy reading the refused bucket is refused too.
    other = make_bucket(backend, "pass")
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=other, Key="c", CopySource={"Bucket": bucket, "Key": "there"})
    assert error_of(caught)[:2] == ("AccessDenied", 403)
    assert stored_keys(backend, other) == []
    # ListBuckets is not affected.
    assert bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_refused_bucket_authenticates_first(backend: Backend, policy_gateway: Gateway) -> None:
    bucket = make_bucket(backend, "deny")
    url = f"{policy_gateway.url}/{bucket}/k"
    response = send(url, "GET", sign("GET", url, UNKNOWN_USER))
    assert response.status == 403
    assert response.error()["Code"] == "InvalidAccessKeyId"
    wrong_secret = Credentials(GATEWAY_USER.access_key_id, UNKNOWN_USER.secret_access_key)
    response = send(url, "GET", sign("GET", url, wrong_secret))
    assert response.status == 403
    assert response.error()["Code"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize("directive", ["COPY", "REPLACE"])
def test_copy_of_plaintext_into_encrypt_bucket_is_refused(
    backend: Backend, policy_gateway: Gateway, directive: str
) -> None:
    plain_bucket, encrypted_bucket = make_bucket(backend, "pass"), make_bucket(backend)
    s3 = policy_gateway.client()
    s3.put_object(Bucket=plain_bucket, Key="src", Body=b"plaintext at rest")
    for source_bucket in (plain_bucket, encrypted_bucket):
        if source_bucket == encrypted_bucket:  # a legacy object stored before the gateway
            direct(backend).put_object(Bucket=encrypted_bucket, Key="src", Body=b"legacy")
        with pytest.raises(ClientError) as caught:
            s3.copy_object(
                Bucket=encrypted_bucket,
                Key="dst",
                CopySource={"Bucket": source_bucket, "Key": "src"},
                MetadataDirective=directive,
            )
        code, status, message = error_of(caught)
        assert (code, status) == ("InvalidRequest", 400)
        assert "upload it through the gateway" in message
    assert stored_keys(backend, encrypted_bucket) == ["src"]  # no "dst"
    with pytest.raises(ClientError) as caught:  # a missing source: no unverified copy
        s3.copy_object(
            Bucket=encrypted_bucket, Key="dst", CopySource={"Bucket": plain_bucket, "Key": "nope"}
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 412)
    assert stored_keys(backend, encrypted_bucket) == ["src"]

    # Within a passthrough bucket plaintext copies are fine; encrypted sources stay encrypted.
    s3.copy_object(
        Bucket=plain_bucket,
        Key="copy",
        CopySource={"Bucket": plain_bucket, "Key": "src"},
        MetadataDirective=directive,
    )
    assert stored(backend, plain_bucket, "copy")[0] == b"plaintext at rest"
    secret = os.urandom(70_000)
    s3.put_object(Bucket=encrypted_bucket, Key="enc", Body=secret)
    s3.copy_object(
        Bucket=plain_bucket,
        Key="enc-copy",
        CopySource={"Bucket": encrypted_bucket, "Key": "enc"},
        MetadataDirective=directive,
    )
    assert "s3gw" in stored(backend, plain_bucket, "enc-copy")[1]
    assert s3.get_object(Bucket=plain_bucket, Key="enc-copy")["Body"].read() == secret
    # And an encrypted object copies into an encrypt bucket as before.
    s3.copy_object(
        Bucket=encrypted_bucket,
        Key="enc-copy",
        CopySource={"Bucket": encrypted_bucket, "Key": "enc"},
        MetadataDirective=directive,
    )
    assert s3.get_object(Bucket=encrypted_bucket, Key="enc-copy")["Body"].read() == secret


def test_policy_changes_apply_on_reload(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """encrypt -> passthrough -> refuse for one bucket, by SIGHUP, in one gateway process."""
    backend = moto_backend
    gateway = gateway_factory(backend, fresh=True)
    bucket = make_bucket(backend, "reload")
    s3 = gateway.client()
    secret = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="encrypted", Body=secret)
    assert "s3gw" in stored(backend, bucket, "encrypted")[1]

    def reload(policy: str) -> None:
        config = copy.deepcopy(gateway.config)
        config["bucket_policies"] = {bucket: policy}
        gateway.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        mark = gateway.log_mark()
        os.kill(gateway.pid, signal.SIGHUP)
        gateway.wait_for_output(r"configuration reloaded.*bucket_policies", since=mark)

    reload("passthrough")
    s3.put_object(Bucket=bucket, Key="plain", Body=b"as sent")
    assert stored(backend, bucket, "plain")[0] == b"as sent"
    assert s3.get_object(Bucket=bucket, Key="encrypted")["Body"].read() == secret
    reload("refuse")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="plain")
    assert error_of(caught)[:2] == ("AccessDenied", 403)


def test_passthrough_bodies_are_still_verified(backend: Backend, policy_gateway: Gateway) -> None:
    bucket = make_bucket(backend, "pass")
    url = f"{policy_gateway.url}/{bucket}/k"
    headers = sign("PUT", url, GATEWAY_USER, body=b"signed body")
    response = send(url, "PUT", headers, b"other body!")  # same length, other bytes
    assert response.status == 400
    assert response.error()["Code"] == "XAmzContentSHA256Mismatch"
    assert stored_keys(backend, bucket) == []

"""CopyObject stays server-side and keeps objects readable; key rotation re-wraps."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from crypto import Envelope
from tests.harness import (
    DELETE,
    KEYRING_KEYS,
    Backend,
    Gateway,
    GatewayFactory,
    find_executable,
    make_bucket,
)


def _envelope(backend: Backend, bucket: str, key: str) -> Envelope:
    head = backend.client().head_object(Bucket=bucket, Key=key)
    metadata = {k.lower(): v for k, v in head["Metadata"].items()}
    return Envelope.decode(metadata["s3gw"])


def _user_metadata(response: dict[str, object]) -> dict[str, str]:
    metadata = response["Metadata"]
    assert isinstance(metadata, dict)
    return {k.lower(): v for k, v in metadata.items()}


def _assert_copied_metadata(
    backend: Backend, got: dict[str, str], expected: dict[str, str]
) -> None:
    assert "s3gw" not in got  # the envelope is never shown
    if backend.name == "rclone":
        # rclone merges REPLACE metadata into the old one and adds "mtime" (AWS replaces).
        assert expected.items() <= got.items()
    else:
        assert got == expected


@pytest.mark.parametrize("directive", ["COPY", "REPLACE"])
@pytest.mark.parametrize("target", ["same-bucket", "other-bucket"])
def test_copy_object_keeps_data_readable(
    backend: Backend, gateway: Gateway, bucket: str, directive: str, target: str
) -> None:
    data = os.urandom(200_000)
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"a": "1"})
    destination = bucket if target == "same-bucket" else make_bucket(backend)
    extra = {"Metadata": {"b": "2"}} if directive == "REPLACE" else {}
    s3.copy_object(
        Bucket=destination,
        Key="dst",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective=directive,
        **extra,
    )
    got = s3.get_object(Bucket=destination, Key="dst")
    assert got["Body"].read() == data
    expected = {"b": "2"} if directive == "REPLACE" else {"a": "1"}
    _assert_copied_metadata(backend, _user_metadata(got), expected)
    ranged = s3.get_object(Bucket=destination, Key="dst", Range="bytes=100000-100009")
    assert ranged["Body"].read() == data[100000:100010]
    assert _envelope(backend, destination, "dst").key_id == "k1"


def test_self_copy_replaces_metadata(backend: Backend, gateway: Gateway, bucket: str) -> None:
    data = os.urandom(70_000)
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="obj", Body=data, Metadata={"v": "old"})
    s3.copy_object(
        Bucket=bucket,
        Key="obj",
        CopySource={"Bucket": bucket, "Key": "obj"},
        MetadataDirective="REPLACE",
        Metadata={"v": "new"},
        ContentType="text/plain",
    )
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    _assert_copied_metadata(backend, _user_metadata(got), {"v": "new"})
    assert got["ContentType"] == "text/plain"


@pytest.mark.parametrize("directive", ["COPY", "REPLACE"])
def test_copy_of_unencrypted_object_into_encrypt_bucket_is_refused(
    backend: Backend, gateway: Gateway, bucket: str, directive: str
) -> None:
    """A server-side copy would store plaintext in a bucket whose objects are encrypted
    (docs/adr/0007-per-bucket-policy.md); passthrough buckets copy it as it is."""
    backend.client().put_object(Bucket=bucket, Key="legacy", Body=b"stored before the gateway")
    s3 = gateway.client()
    with pytest.raises(ClientError) as caught:
        s3.copy_object(
            Bucket=bucket,
            Key="copy",
            CopySource={"Bucket": bucket, "Key": "legacy"},
            MetadataDirective=directive,
            Metadata={"x": "y"},
        )
    assert caught.value.response["Error"]["Code"] == "InvalidRequest"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    keys = [o["Key"] for o in backend.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["legacy"]


def test_copy_with_reserved_metadata_is_refused(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.copy_object(
            Bucket=bucket,
            Key="dst",
            CopySource={"Bucket": bucket, "Key": "src"},
            MetadataDirective="REPLACE",
            Metadata={"s3gw": "v=1"},
        )
    assert caught.value.response["Error"]["Code"] == "InvalidArgument"


def test_copy_source_if_match_mismatch_is_refused(gateway: Gateway, bucket: str) -> None:
    s3 = gateway.client()
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.copy_object(
            Bucket=bucket,
            Key="dst",
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceIfMatch='"00000000000000000000000000000000"',
            MetadataDirective="REPLACE",
        )
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"


def test_key_rotation_rewraps_without_touching_data(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: object
) -> None:
    backend = moto_backend
    bucket = make_bucket(backend, prefix="rotate")
    old_gateway = gateway_factory(backend, {"keyring": {"active": "k0"}})
    objects = {f"dir/obj-{i}": os.urandom(1000 * i) for i in range(6)}
    for key, data in objects.items():
        old_gateway.client().put_object(
            Bucket=bucket, Key=key, Body=data, Metadata={"keep": key}, ContentType="text/x-test"
        )
    backend.client().put_object(Bucket=bucket, Key="plain", Body=b"unencrypted")
    ciphertexts = {
        key: backend.client(config=Config(response_checksum_validation="when_required"))
        .get_object(Bucket=bucket, Key=key)["Body"]
        .read()
        for key in objects
    }

    # New objects use the newest key, old ones stay readable.
    gateway = gateway_factory(backend)
    gateway.client().put_object(Bucket=bucket, Key="new", Body=b"new object")
    assert _envelope(backend, bucket, "new").key_id == "k1"
    for key, data in objects.items():
        assert gateway.client().get_object(Bucket=bucket, Key=key)["Body"].read() == data

    config_path = tmp_path / "rotate.yaml"  # type: ignore[operator]
    config_path.write_text(yaml.safe_dump(gateway.config))
    command = [find_executable("s3-encryption-gateway"), "rewrap", "--config", str(config_path)]
    done = subprocess.run(
        [*command, "--bucket", bucket], capture_output=True, text=True, timeout=120, check=True
    )
    assert "6 re-wrapped" in done.stdout and "1 not encrypted" in done.stdout
    again = subprocess.run(
        [*command, "--bucket", bucket], capture_output=True, text=True, timeout=120, check=True
    )
    assert "0 re-wrapped, 7 already under 'k1'" in again.stdout

    for key in objects:
        assert _envelope(backend, bucket, key).key_id == "k1"
        stored = (
            backend.client(config=Config(response_checksum_validation="when_required"))
            .get_object(Bucket=bucket, Key=key)["Body"]
            .read()
        )
        assert stored == ciphertexts[key]  # metadata-only: the ciphertext is unchanged
    # The old key can now be retired: a gateway without it reads everything.
    k1_only = {"keyring": {"keys": {"k0": DELETE}}}
    retired = gateway_factory(backend, k1_only)
    for key, data in objects.items():
        got = retired.client().get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data
        assert _user_metadata(got) == {"keep": key}
        assert got["ContentType"] == "text/x-test"
    assert base64.b64encode(KEYRING_KEYS["k0"]).decode() not in yaml.safe_dump(retired.config)

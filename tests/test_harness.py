"""Self-tests of the integration harness: backends, gateway processes, awscli helper."""

from __future__ import annotations

import uuid

import pytest
import yaml
from botocore.exceptions import ClientError

from tests.harness import (
    DELETE,
    GATEWAY_CREDENTIALS,
    KEYRING_KEYS,
    RCLONE_CREDENTIALS,
    AwsCli,
    Backend,
    Credentials,
    Gateway,
    GatewayFactory,
    deep_merge,
    http_status,
    s3_client,
    wait_until,
)


def test_credentials_look_realistic() -> None:
    for credentials in (*GATEWAY_CREDENTIALS, RCLONE_CREDENTIALS):
        assert len(credentials.access_key_id) == 20
        assert len(credentials.secret_access_key) == 40
    assert all(len(key) == 32 for key in KEYRING_KEYS.values())


def test_deep_merge_merges_nested_and_deletes() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": 3, "c": [1]}
    merged = deep_merge(base, {"a": {"y": 20, "z": 30}, "b": DELETE, "c": [2]})
    assert merged == {"a": {"x": 1, "y": 20, "z": 30}, "c": [2]}
    assert base == {"a": {"x": 1, "y": 2}, "b": 3, "c": [1]}  # input untouched


def test_wait_until_returns_probe_value_and_times_out() -> None:
    answers = iter([0, 0, 7])
    assert wait_until(lambda: next(answers), timeout=5, interval=0) == 7
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.1, what="never")


def test_direct_round_trip(backend: Backend, bucket: str) -> None:
    s3 = backend.client()
    body = uuid.uuid4().bytes * 1000
    s3.put_object(Bucket=bucket, Key="dir/object.bin", Body=body)
    assert s3.get_object(Bucket=bucket, Key="dir/object.bin")["Body"].read() == body
    s3.delete_object(Bucket=bucket, Key="dir/object.bin")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_rclone_verifies_signatures(rclone_backend: Backend) -> None:
    wrong_secret = Credentials(rclone_backend.access_key_id, "x" * 40)
    with pytest.raises(ClientError) as caught:
        s3_client(rclone_backend.endpoint_url, wrong_secret).list_buckets()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    rclone_backend.client().list_buckets()  # the right secret works


def test_gateway_starts_and_forwards(backend: Backend, gateway: Gateway, bucket: str) -> None:
    assert gateway.alive()
    assert gateway.peak_rss_bytes() > 10 * 1024 * 1024
    # Any HTTP answer proves the proxy forwards. rclone refuses the gateway's client
    # key until the gateway re-signs requests with the backend's key.
    assert 200 <= http_status(f"{gateway.url}/{bucket}") < 600
    if backend.name == "moto":  # moto accepts any key
        gateway.client().put_object(Bucket=bucket, Key="k", Body=b"through the proxy")
        stored = backend.client().get_object(Bucket=bucket, Key="k")["Body"].read()
        assert stored  # plaintext today, ciphertext once the gateway encrypts
    assert "listening at" in gateway.output()


def test_gateway_factory_caches_per_config(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    default = gateway_factory(moto_backend)
    assert gateway_factory(moto_backend) is default
    small_chunks = gateway_factory(moto_backend, {"encryption": {"chunk_size": 1024}})
    assert small_chunks is not default and small_chunks.port != default.port
    written = yaml.safe_load(small_chunks.config_path.read_text())
    assert written["encryption"] == {"chunk_size": 1024, "algorithm": "AES-256-GCM"}
    assert written["backend"]["url"] == moto_backend.endpoint_url


def test_aws_cli_helper(moto_backend: Backend, aws_cli: AwsCli) -> None:
    result = aws_cli(moto_backend, "s3api", "list-buckets", check=True)
    assert '"Buckets"' in result.stdout

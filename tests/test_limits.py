"""Hostile and excessive input, and per-key rate limiting (``addons/limits.py``).

Refusals are S3's XML error documents with a request id, nothing of a refused
request reaches the backend, and odd but valid keys behave through the
gateway exactly as they do on the backend itself.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    GATEWAY_SECOND_USER,
    GATEWAY_USER,
    Backend,
    Credentials,
    Gateway,
    GatewayFactory,
    make_bucket,
)
from tests.rawclient import RawResponse, send, sign, stored_keys


def assert_s3_error(response: RawResponse, code: str, status: int) -> None:
    assert response.status == status, response
    error = response.error()
    assert error["Code"] == code, response.body
    assert error["RequestId"] == response.headers["x-amz-request-id"]


def client_error(call: object) -> str:
    assert callable(call)
    with pytest.raises(ClientError) as caught:
        call()
    code: str = caught.value.response["Error"]["Code"]
    return code


def raw_exchange(gateway: Gateway, data: bytes) -> bytes:
    """Send raw bytes; everything received until the gateway closes (or 5 s of silence)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionError, TimeoutError):
            pass
        return received


def raw_put(gateway: Gateway, bucket: str, body: bytes, extra_headers: list[str]) -> bytes:
    url = f"{gateway.url}/{bucket}/obj"
    headers = sign("PUT", url, GATEWAY_USER, body=body)
    lines = [f"PUT /{bucket}/obj HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join([*lines, *extra_headers]) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- smuggling


def test_content_length_with_transfer_encoding_is_refused(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"
    head = raw_put(gateway, bucket, b"hello", ["Content-Length: 5", "Transfer-Encoding: chunked"])
    # A smuggled second request follows; it must never be answered.
    smuggled = f"GET /{bucket}/obj HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    received = raw_exchange(gateway, head + body + smuggled)
    # mitmproxy refuses the framing; limits.py turns its page into S3's XML.
    assert received.startswith(b"HTTP/1.1 400 "), received[:300]
    assert b"<Code>InvalidRequest</Code>" in received
    assert b"<RequestId>" in received
    assert received.count(b"HTTP/1.1 ") == 1, received
    assert stored_keys(backend, bucket) == []


@pytest.mark.parametrize(
    "lengths", [["5", "6"], ["5", "5"], ["+5"], ["5, 5"]], ids=["differ", "same", "sign", "list"]
)
def test_duplicate_or_malformed_content_length_is_refused(
    backend: Backend, gateway: Gateway, bucket: str, lengths: list[str]
) -> None:
    """mitmproxy's HTTP/1 parser refuses these (400) before any addon sees them."""
    head = raw_put(gateway, bucket, b"hello", [f"Content-Length: {n}" for n in lengths])
    received = raw_exchange(gateway, head + b"hello!")
    assert received.startswith(b"HTTP/1.1 400 "), received[:300]
    assert received.count(b"HTTP/1.1 ") == 1, received
    assert stored_keys(backend, bucket) == []


# --------------------------------------------------------------------------- sizes


def test_header_section_too_large(backend: Backend, gateway: Gateway, bucket: str) -> None:
    url = f"{gateway.url}/{bucket}/obj"
    many = [(f"x-pad-{i}", "v") for i in range(200)]
    response = send(url, "PUT", sign("PUT", url, GATEWAY_USER, body=b"x", headers=many), b"x")
    assert_s3_error(response, "RequestHeaderSectionTooLarge", 400)
    huge = [("x-pad", "a" * 9000)]
    response = send(url, "PUT", sign("PUT", url, GATEWAY_USER, body=b"x", headers=huge), b"x")
    assert_s3_error(response, "RequestHeaderSectionTooLarge", 400)
    assert stored_keys(backend, bucket) == []


def test_user_metadata_too_large(backend: Backend, gateway: Gateway, bucket: str) -> None:
    client = gateway.client()
    code = client_error(
        lambda: client.put_object(Bucket=bucket, Key="obj", Body=b"x", Metadata={"m": "v" * 2100})
    )
    assert code == "MetadataTooLarge"
    assert stored_keys(backend, bucket) == []
    client.put_object(Bucket=bucket, Key="obj", Body=b"x", Metadata={"m": "v" * 1000})
    metadata = client.head_object(Bucket=bucket, Key="obj")["Metadata"]
    assert {name.lower(): value for name, value in metadata.items()} == {"m": "v" * 1000}


def long_key(total_bytes: int) -> str:
    """A key of ``total_bytes`` UTF-8 bytes, in segments a file system accepts (rclone)."""
    segment = "\u00e9" * 100  # 200 bytes
    parts = []
    size = 0
    while size + 201 <= total_bytes:
        parts.append(segment)
        size += 201  # with its "/"
    parts.append("k" * (total_bytes - size))
    return "/".join(parts)


def test_key_too_long(backend: Backend, gateway: Gateway, bucket: str) -> None:
    client = gateway.client()
    longest = long_key(1024)
    assert len(longest.encode()) == 1024
    client.put_object(Bucket=bucket, Key=longest, Body=b"max")
    assert client.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"max"
    too_long = long_key(1025)
    assert len(too_long.encode()) == 1025 and len(too_long) < 1024  # bytes count, not chars
    assert client_error(lambda: client.put_object(Bucket=bucket, Key=too_long, Body=b"x")) == (
        "KeyTooLongError"
    )
    assert stored_keys(backend, bucket) == [longest]


def test_delete_objects_with_more_than_1000_keys(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    client = gateway.client()
    client.put_object(Bucket=bucket, Key="keep", Body=b"x")
    objects = [{"Key": f"k{i}"} for i in range(1000)] + [{"Key": "keep"}]
    code = client_error(lambda: client.delete_objects(Bucket=bucket, Delete={"Objects": objects}))
    assert code == "MalformedXML"
    assert stored_keys(backend, bucket) == ["keep"]
    deleted = client.delete_objects(Bucket=bucket, Delete={"Objects": objects[-1000:]})
    assert {"Key": "keep"} in [{"Key": d["Key"]} for d in deleted.get("Deleted", [])]
    assert stored_keys(backend, bucket) == []


# --------------------------------------------------------------------------- odd keys

ODD_KEYS = [
    "..",
    "../escape",
    "a/../b",
    "a/./b",
    "a%2Fb",
    "a%252Fb",
    "dir//double",
    "trailing/",
    "sp ace+plus",
    "\u00fcnic\u00f8de/\u65e5\u672c\u8a9e/\U0001f600",
    "q?x=1&y#frag",
    "tab\tand~tilde",
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
def test_odd_keys_behave_as_on_the_backend(backend: Backend, gateway: Gateway, key: str) -> None:
    """Whatever the backend does with a key directly, the gateway does the same;
    what is stored round-trips byte for byte under exactly that key."""
    if backend.name == "rclone" and key.endswith("/"):
        pytest.skip("rclone stores a key ending in / as a directory; its listing is not stable")
    direct_bucket = make_bucket(backend)
    via_bucket = make_bucket(backend)
    data = os.urandom(100)

    def outcome(client: object, bucket: str) -> str:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    direct = outcome(backend.client(), direct_bucket)
    via = outcome(gateway.client(), via_bucket)
    assert via == direct
    assert stored_keys(backend, via_bucket) == stored_keys(backend, direct_bucket)
    if via == "ok":
        assert stored_keys(backend, via_bucket) == [key]
        got = gateway.client().get_object(Bucket=via_bucket, Key=key)["Body"].read()
        assert got == data
        listed = gateway.client().list_objects_v2(Bucket=via_bucket)["Contents"]
        assert [(item["Key"], item["Size"]) for item in listed] == [(key, len(data))]


# --------------------------------------------------------------------------- rate limit

RATE_ARGS = ("--set", "gw_rate_limit=2", "--set", "gw_rate_burst=4")


def test_rate_limit_per_access_key(
    backend: Backend, gateway_factory: GatewayFactory, bucket: str
) -> None:
    gateway = gateway_factory(backend, extra_args=RATE_ARGS)
    url = f"{gateway.url}/{bucket}?list-type=2"

    def list_as(credentials: Credentials) -> RawResponse:
        return send(url, "GET", sign("GET", url, credentials))

    # Forged signatures in the first user's name spend none of its tokens.
    forged = Credentials(GATEWAY_USER.access_key_id, GATEWAY_SECOND_USER.secret_access_key)
    for _ in range(6):
        assert_s3_error(list_as(forged), "SignatureDoesNotMatch", 403)
    statuses = [list_as(GATEWAY_USER).status for _ in range(4)]
    assert statuses == [200] * 4  # the burst
    refused = list_as(GATEWAY_USER)
    assert_s3_error(refused, "SlowDown", 503)
    # Another key has its own bucket.
    assert list_as(GATEWAY_SECOND_USER).status == 200
    time.sleep(0.6)  # 2 per second: at least one token back
    assert list_as(GATEWAY_USER).status == 200


def test_rate_limit_is_off_by_default(gateway: Gateway, bucket: str) -> None:
    client = gateway.client()
    statuses = {
        client.list_objects_v2(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"]
        for _ in range(30)
    }
    assert statuses == {200}

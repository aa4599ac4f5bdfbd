"""Client authentication through the real gateway.

Every refusal must be S3's error document with the right code, and nothing of
the refused request may reach the backend: the tests look at the backend
directly afterwards. Presigned URLs and the second configured user work.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from botocore.config import Config

from crypto import ciphertext_length
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_SECOND_USER,
    GATEWAY_USER,
    UNKNOWN_USER,
    Backend,
    Credentials,
    Gateway,
)
from tests.rawclient import RawResponse, client_clock, is_stored, send, sign, stored_keys

BODY = b"secret payload \x00\xff" * 8
SIGV4 = Config(signature_version="s3v4")


def assert_s3_error(response: RawResponse, code: str, status: int) -> dict[str, str]:
    """The response is S3's XML error ``code`` with a request id; returns its elements."""
    assert response.status == status, response.body
    error = response.error()
    assert error["Code"] == code, response.body
    assert error["RequestId"], response.body
    assert error["RequestId"] == response.headers["x-amz-request-id"]
    return error


def signed_put(
    gateway: Gateway,
    bucket: str,
    key: str,
    credentials: Credentials = GATEWAY_USER,
    when: datetime | None = None,
) -> RawResponse:
    url = f"{gateway.url}/{bucket}/{key}"
    return send(url, "PUT", sign("PUT", url, credentials, body=BODY, when=when), BODY)


def presigned(gateway: Gateway, method: str, bucket: str, key: str, expires: int = 300) -> str:
    client = gateway.client(config=SIGV4)
    url: str = client.generate_presigned_url(
        method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
    )
    return url


# --------------------------------------------------------------------------- refusals


def test_wrong_secret(backend: Backend, gateway: Gateway, bucket: str) -> None:
    wrong = Credentials(GATEWAY_USER.access_key_id, GATEWAY_SECOND_USER.secret_access_key)
    error = assert_s3_error(signed_put(gateway, bucket, "obj", wrong), "SignatureDoesNotMatch", 403)
    assert error["AWSAccessKeyId"] == GATEWAY_USER.access_key_id
    assert stored_keys(backend, bucket) == []


def test_unknown_access_key(backend: Backend, gateway: Gateway, bucket: str) -> None:
    response = signed_put(gateway, bucket, "obj", UNKNOWN_USER)
    error = assert_s3_error(response, "InvalidAccessKeyId", 403)
    assert error["AWSAccessKeyId"] == UNKNOWN_USER.access_key_id
    assert stored_keys(backend, bucket) == []


@pytest.mark.parametrize("skew", [timedelta(minutes=-20), timedelta(minutes=20)], ids=str)
def test_clock_skew(backend: Backend, gateway: Gateway, bucket: str, skew: timedelta) -> None:
    response = signed_put(gateway, bucket, "obj", when=datetime.now(UTC) + skew)
    error = assert_s3_error(response, "RequestTimeTooSkewed", 403)
    assert error["MaxAllowedSkewMilliseconds"] == "900000"
    assert stored_keys(backend, bucket) == []


def test_small_skew_is_accepted(backend: Backend, gateway: Gateway, bucket: str) -> None:
    response = signed_put(gateway, bucket, "obj", when=datetime.now(UTC) - timedelta(minutes=10))
    assert response.status == 200, response.body
    assert stored_keys(backend, bucket) == ["obj"]


def test_missing_authentication(backend: Backend, gateway: Gateway, bucket: str) -> None:
    url = f"{gateway.url}/{bucket}/obj"
    assert_s3_error(send(url, "PUT", {}, BODY), "AccessDenied", 403)
    listing = send(f"{gateway.url}/{bucket}", "GET", {})
    assert_s3_error(listing, "AccessDenied", 403)
    assert stored_keys(backend, bucket) == []


def test_expired_presigned_url(backend: Backend, gateway: Gateway, bucket: str) -> None:
    with client_clock(datetime.now(UTC) - timedelta(hours=2)):
        url = presigned(gateway, "put_object", bucket, "obj", expires=3600)
    error = assert_s3_error(send(url, "PUT", {}, BODY), "AccessDenied", 403)
    assert error["Message"] == "Request has expired"
    assert stored_keys(backend, bucket) == []


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize("tamper", ["other-key", "longer-expiry", "other-signature"])
def test_tampered_presigned_url(
    backend: Backend, gateway: Gateway, bucket: str, tamper: str
) -> None:
    url = presigned(gateway, "put_object", bucket, "obj", expires=60)
    if tamper == "other-key":
        url = url.replace(f"/{bucket}/obj?", f"/{bucket}/obj2?")
    elif tamper == "longer-expiry":
        url = _with_query(url, **{"X-Amz-Expires": "3600"})
    else:
        signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
        url = _with_query(url, **{"X-Amz-Signature": signature[::-1]})
    assert_s3_error(send(url, "PUT", {}, BODY), "SignatureDoesNotMatch", 403)
    assert stored_keys(backend, bucket) == []


def test_sigv2_presigned_url_is_refused(backend: Backend, gateway: Gateway, bucket: str) -> None:
    # boto3's generate_presigned_url still defaults to SigV2 query auth for S3
    # unless signature_version="s3v4" is configured; the gateway speaks SigV4 only.
    url = gateway.client().generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "obj"}, ExpiresIn=60
    )
    assert "X-Amz-Signature" not in url
    error = assert_s3_error(send(url, "PUT", {}, BODY), "InvalidRequest", 400)
    assert "AWS4-HMAC-SHA256" in error["Message"]
    assert stored_keys(backend, bucket) == []


def test_buffered_body_not_matching_signed_sha256(
    backend: Backend, gateway: Gateway, bucket: str
) -> None:
    """A small non-object body (DeleteObjects) is checked before anything is forwarded."""
    backend.client().put_object(Bucket=bucket, Key="keep", Body=b"x")
    url = f"{gateway.url}/{bucket}?delete"
    signed_body = b"<Delete><Object><Key>gone</Key></Object></Delete>"
    sent_body = b"<Delete><Object><Key>keep</Key></Object></Delete>"
    headers = sign("POST", url, GATEWAY_USER, body=signed_body)
    error = assert_s3_error(send(url, "POST", headers, sent_body), "XAmzContentSHA256Mismatch", 400)
    assert error["S3ComputedContentSHA256"] != error["ClientComputedContentSHA256"]
    assert is_stored(backend, bucket, "keep")


@pytest.mark.parametrize("size", [0, 100, 300_000], ids=lambda s: f"{s}B")
def test_put_body_not_matching_signed_sha256_is_not_stored(
    backend: Backend, gateway: Gateway, bucket: str, size: int
) -> None:
    url = f"{gateway.url}/{bucket}/obj"
    headers = sign("PUT", url, GATEWAY_USER, body=b"a" * max(size, 1))
    mark = gateway.log_mark()
    try:
        response = send(url, "PUT", headers, b"b" * size)
    except (ConnectionError, http.client.HTTPException):
        # The gateway drops uploads that fail a body check once they stream.
        gateway.wait_for_output(r"aborting PUT \S+/obj: XAmzContentSHA256Mismatch", since=mark)
    else:
        assert_s3_error(response, "XAmzContentSHA256Mismatch", 400)
    assert stored_keys(backend, bucket) == []
    assert gateway.alive()


def test_put_body_not_matching_signed_sha256_gets_s3_error(gateway: Gateway, bucket: str) -> None:
    url = f"{gateway.url}/{bucket}/obj"
    headers = sign("PUT", url, GATEWAY_USER, body=b"a" * 100)
    assert_s3_error(send(url, "PUT", headers, b"b" * 100), "XAmzContentSHA256Mismatch", 400)


# --------------------------------------------------------------------------- presigned URLs

KEYS = ["plain.txt", "dir/with space/ünïcødé+plus & more=1.txt"]


@pytest.mark.parametrize("key", KEYS, ids=["plain", "spaces-unicode-plus"])
def test_presigned_put_and_get(backend: Backend, gateway: Gateway, bucket: str, key: str) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    put_url = presigned(gateway, "put_object", bucket, key)
    # urllib's default Content-Type for a body is form-urlencoded, whose body moto
    # swallows as form fields (it then stores an empty object, gateway or not).
    request = urllib.request.Request(
        put_url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200

    stored = backend.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(stored) == ciphertext_length(len(data), CHUNK_SIZE)
    assert data[:64] not in stored

    get_url = presigned(gateway, "get_object", bucket, key)
    with urllib.request.urlopen(get_url, timeout=30) as response:
        assert response.read() == data
    ranged = urllib.request.Request(get_url, headers={"Range": "bytes=70000-70099"})
    with urllib.request.urlopen(ranged, timeout=30) as response:
        assert response.status == 206
        assert response.read() == data[70000:70100]


def test_presigned_get_of_a_missing_key(gateway: Gateway, bucket: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(presigned(gateway, "get_object", bucket, "absent"), timeout=30)
    assert caught.value.code == 404


# --------------------------------------------------------------------------- second user


def test_second_user(backend: Backend, gateway: Gateway, bucket: str) -> None:
    second = gateway.client(GATEWAY_SECOND_USER)
    data = os.urandom(CHUNK_SIZE + 1)
    second.put_object(Bucket=bucket, Key="from-second", Body=data)
    gateway.client().put_object(Bucket=bucket, Key="from-first", Body=b"first")

    assert second.get_object(Bucket=bucket, Key="from-second")["Body"].read() == data
    # One keyring for all users: each reads what the other wrote.
    assert second.get_object(Bucket=bucket, Key="from-first")["Body"].read() == b"first"
    assert gateway.client().get_object(Bucket=bucket, Key="from-second")["Body"].read() == data
    listing = second.list_objects_v2(Bucket=bucket)
    assert sorted(item["Key"] for item in listing["Contents"]) == ["from-first", "from-second"]
    second.delete_object(Bucket=bucket, Key="from-second")
    assert stored_keys(backend, bucket) == ["from-first"]

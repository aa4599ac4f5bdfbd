"""SigV4 verification against AWS's published examples, botocore and boto3."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.s3 import sigv4
from addons.s3.errors import S3Error
from addons.s3.sigv4 import PayloadMode
from tests.unit.s3_helpers import (
    ACCESS_KEY,
    DOC_DATE,
    DOC_HOST,
    DOC_KEY,
    DOC_NOW,
    NOW,
    REGION,
    SECRET_KEY,
    CapturingClient,
    Wire,
    body_stream,
    capturing_client,
    doc_authorization,
    doc_verify,
    frozen_signing_clock,
    sign_with_botocore,
)

ENDPOINT = "http://127.0.0.1:9000"

# --- AWS's documented examples ------------------------------------------------
# The examples of "Signature Calculations for the Authorization Header" and of
# "Authenticating Requests: Using Query Parameters" in the S3 API reference.

BASIC = "host;x-amz-content-sha256;x-amz-date"
DOC_EXAMPLES = [
    pytest.param(
        "GET",
        "/test.txt",
        [("Range", "bytes=0-9"), ("x-amz-content-sha256", sigv4.EMPTY_SHA256)],
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        id="GET Object",
    ),
    pytest.param(
        "PUT",
        "/test%24file.text",
        [
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "x-amz-content-sha256",
                "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
            ),
        ],
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        id="PUT Object",
    ),
    pytest.param(
        "GET",
        "/?lifecycle",
        [("x-amz-content-sha256", sigv4.EMPTY_SHA256)],
        BASIC,
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        id="GET Bucket Lifecycle",
    ),
    pytest.param(
        "GET",
        "/?max-keys=2&prefix=J",
        [("x-amz-content-sha256", sigv4.EMPTY_SHA256)],
        BASIC,
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        id="GET Bucket (List Objects)",
    ),
]


@pytest.mark.parametrize(("method", "target", "headers", "signed", "signature"), DOC_EXAMPLES)
def test_aws_documented_header_examples(
    method: str, target: str, headers: list[tuple[str, str]], signed: str, signature: str
) -> None:
    wire_headers = [DOC_HOST, ("x-amz-date", DOC_DATE), *headers]
    auth = doc_verify(method, target, [*wire_headers, doc_authorization(signed, signature)])
    assert auth.access_key == DOC_KEY
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.seed_signature == signature
    assert auth.payload_mode is PayloadMode.SIGNED
    assert not auth.presigned


def test_aws_documented_put_object_body_matches_its_signed_hash() -> None:
    auth = doc_verify(
        "PUT",
        "/test%24file.text",
        [
            DOC_HOST,
            ("x-amz-date", DOC_DATE),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "x-amz-content-sha256",
                "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
            ),
            doc_authorization(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ],
    )
    verifier = sigv4.PayloadHashVerifier(auth.payload_hash)
    verifier.update(b"Welcome to ")
    verifier.update(b"Amazon S3.")
    verifier.finish()


DOC_PRESIGNED = (
    "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def test_aws_documented_presigned_url() -> None:
    auth = doc_verify("GET", DOC_PRESIGNED, [DOC_HOST])
    assert auth.presigned
    assert auth.payload_hash == "UNSIGNED-PAYLOAD"
    assert auth.payload_mode is PayloadMode.UNSIGNED
    assert auth.amz_date == DOC_DATE


def test_aws_documented_presigned_url_is_valid_until_its_end() -> None:
    doc_verify("GET", DOC_PRESIGNED, [DOC_HOST], now=DOC_NOW + timedelta(seconds=86400))
    with pytest.raises(S3Error) as caught:
        doc_verify(
            "GET", DOC_PRESIGNED, [DOC_HOST], now=DOC_NOW + timedelta(seconds=86400, microseconds=1)
        )
    assert (caught.value.code, caught.value.message) == ("AccessDenied", "Request has expired")
    assert caught.value.extra == {
        "X-Amz-Expires": "86400",
        "Expires": "2013-05-25T00:00:00Z",
        "ServerTime": "2013-05-25T00:00:00Z",
    }


STREAMING_HEADERS = [
    ("Host", "s3.amazonaws.com"),
    ("x-amz-date", DOC_DATE),
    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ("Content-Encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"),
]


def test_aws_documented_streaming_seed_signature() -> None:
    signed = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class"
    )
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    headers = [
        *STREAMING_HEADERS,
        ("Content-Length", "66824"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        doc_authorization(signed, seed),
    ]
    auth = doc_verify("PUT", "/examplebucket/chunkObject.txt", headers)
    assert auth.seed_signature == seed
    assert auth.payload_mode is PayloadMode.STREAMING_SIGNED


def test_aws_documented_streaming_trailer_seed_signature() -> None:
    signed = (
        "content-encoding;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer"
    )
    seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    headers = [
        *STREAMING_HEADERS,
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
        ("x-amz-trailer", "x-amz-checksum-crc32c"),
        doc_authorization(signed, seed),
    ]
    auth = doc_verify("PUT", "/examplebucket/chunkObject.txt", headers)
    assert auth.payload_mode is PayloadMode.STREAMING_SIGNED_TRAILER


# --- botocore's signers ----------------------------------------------------------

KEYS = [
    "plain.txt",
    "a b/c d",
    "ü/中文/ключ",
    "a+b",
    "a=b&c",
    "tilde~",
    "100%",
    "!*'()$,;:@",
    "a//b/",
    "a?b#c",
    "x/../y/./z",
]


def object_url(key: str, query: str = "") -> str:
    # As botocore's serializer writes an S3 key into the path.
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    return f"{url}?{query}" if query else url


@pytest.mark.parametrize("key", KEYS)
def test_botocore_header_signature_over_awkward_keys(key: str) -> None:
    wire = sign_with_botocore("PUT", object_url(key), body=b"data")
    auth = wire.verify()
    assert auth.payload_hash == hashlib.sha256(b"data").hexdigest()
    assert (auth.region, auth.service, auth.access_key) == (REGION, "s3", ACCESS_KEY)


@pytest.mark.parametrize("key", KEYS)
def test_botocore_presigned_url_over_awkward_keys(key: str) -> None:
    wire = sign_with_botocore("GET", object_url(key), presign_expires=3600)
    assert "X-Amz-Signature=" in wire.query
    auth = wire.verify(NOW + timedelta(minutes=59))
    assert auth.presigned
    assert auth.payload_mode is PayloadMode.UNSIGNED


@pytest.mark.parametrize(
    "query",
    [
        "uploads",
        "uploadId=abc%2Fdef&partNumber=3",
        "list-type=2&prefix=a%20b%2F&delimiter=%2F&encoding-type=url",
        "prefix=&max-keys=5",
        "versionId=%2B%2B%3D%3D",
        "b=2&a=1&a=0&A=3",
        "response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22",
        "x-id=GetObject&acl",
    ],
)
def test_botocore_signature_over_query_strings(query: str) -> None:
    sign_with_botocore("GET", object_url("key", query)).verify()
    sign_with_botocore("GET", object_url("key", query), presign_expires=60).verify()


def test_repeated_headers_are_joined_with_commas() -> None:
    headers = [("x-amz-meta-tag", "one"), ("x-amz-meta-tag", "two  words"), ("X-Amz-Meta-B", "b")]
    wire = sign_with_botocore("PUT", object_url("k"), headers, b"")
    assert [v for n, v in wire.headers if n.lower() == "x-amz-meta-tag"] == ["one", "two  words"]
    wire.verify()


def test_header_values_are_trimmed_and_whitespace_collapsed() -> None:
    headers = [("x-amz-meta-s", "  a   b \t c  ")]
    wire = sign_with_botocore("PUT", object_url("k"), headers, b"")
    wire.verify()
    # The same value spaced differently canonicalizes the same way.
    wire.with_header("x-amz-meta-s", "a b  c").verify()


def test_unsigned_payload_header() -> None:
    wire = sign_with_botocore(
        "PUT",
        "https://s3.example.com/bucket/k",
        [("Content-MD5", "x")],
        b"body",
        unsigned_payload=True,
    )
    auth = wire.verify()
    assert auth.payload_hash == "UNSIGNED-PAYLOAD"
    assert auth.payload_mode is PayloadMode.UNSIGNED


def test_host_with_port_and_uppercase_header_names() -> None:
    wire = sign_with_botocore("GET", "http://localhost:9000/bucket/key")
    assert ("Host", "localhost:9000") in wire.headers
    upper = Wire(
        wire.method, wire.path, wire.query, [(name.upper(), value) for name, value in wire.headers]
    )
    upper.verify()


def test_http2_authority_stands_in_for_host() -> None:
    wire = sign_with_botocore("GET", object_url("key"))
    authority = wire.with_header("Host", None).with_header(":authority", "127.0.0.1:9000")
    authority.verify()


def test_signature_in_uppercase_is_accepted() -> None:
    wire = sign_with_botocore("GET", object_url("key"))
    authorization = wire.header("Authorization")
    head, _, signature = authorization.rpartition("=")
    wire.with_header("Authorization", f"{head}={signature.upper()}").verify()


def test_date_header_instead_of_x_amz_date() -> None:
    wire = sign_with_botocore("GET", object_url("key"), [("Date", "Mon, 01 Jan 2001 00:00:00 GMT")])
    assert "x-amz-date" not in {name.lower() for name, _ in wire.headers}
    auth = wire.verify()
    assert auth.amz_date == "20240506T070809Z"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30),
    meta=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    query_value=st.text(max_size=15),
)
def test_any_botocore_request_verifies_and_any_change_is_caught(
    key: str, meta: str, query_value: str
) -> None:
    query = "prefix=" + quote(query_value.encode("utf-8", "surrogatepass"), safe="-_.~")
    wire = sign_with_botocore("PUT", object_url(key, query), [("x-amz-meta-m", meta)], b"x")
    wire.verify()
    with pytest.raises(S3Error) as caught:
        Wire(wire.method, wire.path + "x", wire.query, wire.headers).verify()
    assert caught.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as caught:
        wire.with_header("x-amz-meta-m", meta + "!").verify()
    assert caught.value.code == "SignatureDoesNotMatch"


# --- boto3, end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def http_client() -> CapturingClient:
    return capturing_client(ENDPOINT)


@pytest.fixture(scope="module")
def https_client() -> CapturingClient:
    return capturing_client("https://s3.example.com:8443")


def test_boto3_put_object_signed_payload(http_client: CapturingClient) -> None:
    with frozen_signing_clock():
        http_client.client.put_object(
            Bucket="bkt", Key="dir/ü b+c=d~!", Body=b"hello", Metadata={"note": "x  y"}
        )
    wire = http_client.last()
    auth = wire.verify()
    assert auth.payload_mode is PayloadMode.SIGNED
    verifier = sigv4.PayloadHashVerifier(auth.payload_hash)
    verifier.update(wire.body)
    verifier.finish()


def test_boto3_put_object_streaming_unsigned_trailer(https_client: CapturingClient) -> None:
    with frozen_signing_clock():
        https_client.client.put_object(
            Bucket="bkt", Key="a b", Body=body_stream(b"streamed"), ChecksumAlgorithm="CRC32"
        )
    auth = https_client.last().verify()
    assert auth.payload_mode is PayloadMode.STREAMING_UNSIGNED_TRAILER


def test_boto3_listing_and_multipart_calls(http_client: CapturingClient) -> None:
    with frozen_signing_clock():
        http_client.client.list_objects_v2(Bucket="bkt", Prefix="a b/ü", Delimiter="/")
        http_client.sent[-1].verify()
        http_client.client.upload_part(
            Bucket="bkt", Key="k", UploadId="a/b+c==", PartNumber=2, Body=b"part"
        )
        http_client.sent[-1].verify()


def test_boto3_presigned_urls(http_client: CapturingClient) -> None:
    with frozen_signing_clock():
        url = http_client.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": "bkt",
                "Key": "ü/a b+c",
                "ResponseContentDisposition": 'attachment; filename="a b.txt"',
            },
            ExpiresIn=300,
        )
    path_and_query = url.removeprefix(ENDPOINT)
    path, _, query = path_and_query.partition("?")
    auth = Wire("GET", path, query, [("Host", "127.0.0.1:9000")]).verify(
        NOW + timedelta(seconds=299)
    )
    assert auth.presigned


# --- Non-canonical wire forms that S3 accepts ----------------------------------


def test_path_sent_unencoded_but_signed_encoded() -> None:
    wire = sign_with_botocore("GET", object_url("a+b!c"))
    assert wire.path == "/bucket/a%2Bb%21c"
    Wire(wire.method, "/bucket/a+b!c", wire.query, wire.headers).verify()
    Wire(wire.method, "/bucket/a%2bb%21c", wire.query, wire.headers).verify()


def test_plus_in_query_is_a_space_or_a_plus() -> None:
    spaced = sign_with_botocore("GET", object_url("k", "prefix=a%20b"))
    Wire(spaced.method, spaced.path, "prefix=a+b", spaced.headers).verify()
    plus = sign_with_botocore("GET", object_url("k", "prefix=a%2Bb"))
    Wire(plus.method, plus.path, "prefix=a+b", plus.headers).verify()


def test_query_encoding_is_normalized() -> None:
    wire = sign_with_botocore("GET", object_url("k", "prefix=%C3%BC%2F&a=x~y"))
    Wire(wire.method, wire.path, "prefix=%c3%bc/&a=x%7Ey", wire.headers).verify()


def test_double_slashes_and_dot_segments_are_kept() -> None:
    wire = sign_with_botocore("GET", object_url("a//b/../c"))
    assert wire.path == "/bucket/a//b/../c"
    wire.verify()
    with pytest.raises(S3Error):
        Wire(wire.method, "/bucket/a/c", wire.query, wire.headers).verify()


# --- Refusals ---------------------------------------------------------------------


def refusal(wire: Wire, now: datetime = NOW, **kwargs: str | None) -> S3Error:
    with pytest.raises(S3Error) as caught:
        wire.verify(now, **kwargs)
    return caught.value


def test_no_authentication_is_access_denied() -> None:
    err = refusal(Wire("GET", "/bucket/key", "", [("Host", "h")]))
    assert (err.code, err.status, err.message) == ("AccessDenied", 403, "Access Denied")
    err = refusal(Wire("GET", "/bucket/key", "", [("Host", "h"), ("Authorization", "")]))
    assert err.code == "AccessDenied"


@pytest.mark.parametrize(
    ("query", "authorization"),
    [
        ("", "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="),
        ("AWSAccessKeyId=AK&Signature=abc&Expires=1", None),
    ],
)
def test_signature_version_2_is_refused(query: str, authorization: str | None) -> None:
    headers = [("Host", "h")] + ([("Authorization", authorization)] if authorization else [])
    err = refusal(Wire("GET", "/bucket/key", query, headers))
    assert (err.code, err.status) == ("InvalidRequest", 400)
    assert err.message.endswith("Please use AWS4-HMAC-SHA256.")


def test_other_authorization_schemes() -> None:
    err = refusal(Wire("GET", "/", "", [("Host", "h"), ("Authorization", "Bearer token")]))
    assert (err.code, err.message) == ("InvalidArgument", "Unsupported Authorization Type")
    assert err.extra == {"ArgumentName": "Authorization", "ArgumentValue": "Bearer token"}
    sigv4a = "AWS4-ECDSA-P256-SHA256 Credential=AK/20240506/s3/aws4_request, SignedHeaders=host"
    err = refusal(Wire("GET", "/", "", [("Host", "h"), ("Authorization", sigv4a)]))
    assert (err.code, err.status) == ("NotImplemented", 501)


def test_both_mechanisms_at_once() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    err = refusal(Wire(wire.method, wire.path, "X-Amz-Algorithm=AWS4-HMAC-SHA256", wire.headers))
    assert err.code == "InvalidArgument"
    assert err.message.startswith("Only one auth mechanism allowed")


def test_unknown_access_key() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    other = wire.header("Authorization").replace(ACCESS_KEY, "AKIAUNKNOWN")
    err = refusal(wire.with_header("Authorization", other))
    assert (err.code, err.status) == ("InvalidAccessKeyId", 403)
    assert err.extra == {"AWSAccessKeyId": "AKIAUNKNOWN"}


def test_wrong_secret_reports_what_was_signed() -> None:
    wire = sign_with_botocore("GET", object_url("k", "prefix=a%20b"), secret="other")
    err = refusal(wire)
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)
    assert err.message.startswith("The request signature we calculated does not match")
    assert list(err.extra) == [
        "AWSAccessKeyId",
        "StringToSign",
        "SignatureProvided",
        "StringToSignBytes",
        "CanonicalRequest",
        "CanonicalRequestBytes",
    ]
    canonical = err.extra["CanonicalRequest"]
    assert canonical.startswith("GET\n/bucket/k\nprefix=a%20b\nhost:127.0.0.1:9000\n")
    assert canonical.endswith("\n\nhost;x-amz-content-sha256;x-amz-date\n" + sigv4.EMPTY_SHA256)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert err.extra["StringToSign"] == (
        f"AWS4-HMAC-SHA256\n20240506T070809Z\n20240506/{REGION}/s3/aws4_request\n{digest}"
    )
    assert err.extra["StringToSignBytes"].startswith("41 57 53 34")


@pytest.mark.parametrize("seconds", [-900, 900])
def test_clock_skew_up_to_15_minutes_is_fine(seconds: int) -> None:
    sign_with_botocore("GET", object_url("k")).verify(NOW + timedelta(seconds=seconds))


@pytest.mark.parametrize("seconds", [-901, 901])
def test_clock_skew_beyond_15_minutes(seconds: int) -> None:
    err = refusal(sign_with_botocore("GET", object_url("k")), NOW + timedelta(seconds=seconds))
    assert (err.code, err.status) == ("RequestTimeTooSkewed", 403)
    assert err.extra["RequestTime"] == "20240506T070809Z"
    assert err.extra["MaxAllowedSkewMilliseconds"] == "900000"
    assert err.extra["ServerTime"] == (NOW + timedelta(seconds=seconds)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_signature_is_checked_before_time() -> None:
    wire = sign_with_botocore("GET", object_url("k"), secret="other")
    assert refusal(wire, NOW + timedelta(days=1)).code == "SignatureDoesNotMatch"


def test_missing_or_invalid_payload_hash() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    err = refusal(wire.with_header("x-amz-content-sha256", None))
    assert (err.code, err.message) == (
        "InvalidRequest",
        "Missing required header for this request: x-amz-content-sha256",
    )
    err = refusal(wire.with_header("x-amz-content-sha256", "abc"))
    assert err.code == "InvalidArgument"
    assert err.extra == {"ArgumentName": "x-amz-content-sha256", "ArgumentValue": "abc"}
    err = refusal(
        wire.with_header("x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")
    )
    assert err.code == "NotImplemented"


def test_missing_or_invalid_date() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    for dated in (
        wire.with_header("x-amz-date", None),
        wire.with_header("x-amz-date", "2024-05-06"),
    ):
        err = refusal(dated)
        assert (err.code, err.message) == (
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
        )


def authorization_edit(old: str, new: str) -> Wire:
    wire = sign_with_botocore("GET", object_url("k"))
    return wire.with_header("Authorization", wire.header("Authorization").replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        ("Credential=", "Credentials=", "requires three components"),
        (", Signature=", ", Sig=", "requires three components"),
        (f"/{REGION}/", "/", "the Credential is mal-formed"),
        ("/20240506/", "/2024056/", 'incorrect date format "2024056"'),
        ("/s3/", "/ec2/", 'incorrect service "ec2". This endpoint belongs to "s3".'),
        ("aws4_request", "aws4_reques", 'incorrect terminal "aws4_reques"'),
        ("/20240506/", "/20240505/", 'Invalid credential date "20240505"'),
    ],
)
def test_malformed_authorization_header(old: str, new: str, detail: str) -> None:
    err = refusal(authorization_edit(old, new))
    assert (err.code, err.status) == ("AuthorizationHeaderMalformed", 400)
    assert err.message.startswith("The authorization header is malformed; ")
    assert detail in err.message


def test_region_is_enforced_only_when_configured() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    wire.verify(expected_region=REGION)
    err = refusal(wire, expected_region="us-east-1")
    assert err.code == "AuthorizationHeaderMalformed"
    assert f"the region '{REGION}' is wrong; expecting 'us-east-1'" in err.message
    assert err.extra == {"Region": "us-east-1"}


def test_unsigned_amz_headers_are_refused() -> None:
    wire = sign_with_botocore("PUT", object_url("k"), [("x-amz-meta-a", "1")])
    err = refusal(wire.with_header("x-amz-meta-b", "2").with_header("X-Amz-Acl", "public-read"))
    assert (err.code, err.message) == (
        "AccessDenied",
        "There were headers present in the request which were not signed",
    )
    assert err.extra == {"HeadersNotSigned": "x-amz-acl, x-amz-meta-b"}
    # Headers outside x-amz-* may go unsigned, and so may the payload hash.
    wire.with_header("User-Agent", "curl").with_header("Content-Type", "text/plain").verify()


def sign_by_hand(
    headers: list[tuple[str, str]], signed: list[str], *, target: str = "/bucket/k"
) -> Wire:
    """An independent signer for requests botocore will not make; target is canonical."""
    path, _, query = target.partition("?")
    values = {name.lower(): value for name, value in headers}
    canonical_headers = "".join(f"{name}:{values[name]}\n" for name in signed)
    payload_hash = values.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    canonical = "\n".join(["GET", path, query, canonical_headers, ";".join(signed), payload_hash])
    scope = f"20240506/{REGION}/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"AWS4-HMAC-SHA256\n{values['x-amz-date']}\n{scope}\n{digest}"
    key = ("AWS4" + SECRET_KEY).encode()
    for part in ("20240506", REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return Wire("GET", path, query, [*headers, ("Authorization", authorization)])


HAND_HEADERS = [
    ("Host", "127.0.0.1:9000"),
    ("x-amz-date", "20240506T070809Z"),
    ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
]


def test_hand_signed_request_verifies() -> None:
    sign_by_hand(HAND_HEADERS, ["host", "x-amz-content-sha256", "x-amz-date"]).verify()


def test_payload_hash_may_be_left_unsigned() -> None:
    auth = sign_by_hand(HAND_HEADERS, ["host", "x-amz-date"]).verify()
    assert auth.payload_hash == sigv4.EMPTY_SHA256


def test_host_must_be_signed() -> None:
    err = refusal(sign_by_hand(HAND_HEADERS, ["x-amz-content-sha256", "x-amz-date"]))
    assert (err.code, err.extra) == ("AccessDenied", {"HeadersNotSigned": "host"})


def test_signed_headers_are_taken_in_the_order_listed() -> None:
    sign_by_hand(HAND_HEADERS, ["x-amz-date", "host", "x-amz-content-sha256"]).verify()


def test_a_signed_header_missing_from_the_request_breaks_the_signature() -> None:
    wire = sign_with_botocore("PUT", object_url("k"), [("x-amz-meta-a", "1")])
    assert refusal(wire.with_header("x-amz-meta-a", None)).code == "SignatureDoesNotMatch"


# --- Presigned refusals -----------------------------------------------------------


def presigned(expires: int = 60, when: datetime = NOW) -> Wire:
    return sign_with_botocore(
        "GET", object_url("k", "x-id=GetObject"), presign_expires=expires, when=when
    )


def edit_query(wire: Wire, old: str, new: str) -> Wire:
    assert old in wire.query
    return Wire(wire.method, wire.path, wire.query.replace(old, new), wire.headers)


def test_presigned_expiry_and_not_yet_valid() -> None:
    wire = presigned(60)
    wire.verify(NOW + timedelta(seconds=60))
    err = refusal(wire, NOW + timedelta(seconds=61))
    assert (err.code, err.message) == ("AccessDenied", "Request has expired")
    wire.verify(NOW - timedelta(seconds=900))
    err = refusal(wire, NOW - timedelta(seconds=901))
    assert (err.code, err.message) == ("AccessDenied", "Request is not yet valid")
    assert err.extra["X-Amz-Date"] == str(int(NOW.timestamp() * 1000))
    assert refusal(presigned(0), NOW).message == "Request has expired"


def test_presigned_older_than_15_minutes_is_fine_within_its_expiry() -> None:
    presigned(604800).verify(NOW + timedelta(days=6))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("X-Amz-Expires=60", "X-Amz-Expires=604801", "X-Amz-Expires must be less than a week"),
        ("X-Amz-Expires=60", "X-Amz-Expires=-1", "X-Amz-Expires must be non-negative"),
        ("X-Amz-Expires=60", "X-Amz-Expires=1h", "X-Amz-Expires should be a number"),
        ("X-Amz-Expires=60&", "", "Query-string authentication version 4 requires"),
        ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1", "only supports"),
        ("X-Amz-Date=20240506T070809Z", "X-Amz-Date=2024-05-06", "ISO8601 Long Format"),
        (
            "%2Fs3%2F",
            "%2Fec2%2F",
            "Error parsing the X-Amz-Credential parameter; incorrect service",
        ),
        (
            "X-Amz-Expires=60",
            "X-Amz-Expires=60&x-amz-expires=60",
            "appears more than once",
        ),
    ],
)
def test_malformed_presigned_parameters(old: str, new: str, message: str) -> None:
    err = refusal(edit_query(presigned(), old, new))
    assert (err.code, err.status) == ("AuthorizationQueryParametersError", 400)
    assert message in err.message


def test_presigned_unknown_key_and_bad_signature() -> None:
    wire = presigned()
    err = refusal(edit_query(wire, f"X-Amz-Credential={ACCESS_KEY}", "X-Amz-Credential=AKIAOTHER"))
    assert err.code == "InvalidAccessKeyId"
    err = refusal(edit_query(wire, "x-id=GetObject", "x-id=PutObject"))
    assert err.code == "SignatureDoesNotMatch"
    err = refusal(Wire("PUT", wire.path, wire.query, wire.headers))
    assert err.code == "SignatureDoesNotMatch"


def test_presigned_parameter_names_in_any_case_and_order() -> None:
    wire = presigned()
    reordered = "&".join(reversed(wire.query.split("&")))
    Wire(wire.method, wire.path, reordered, wire.headers).verify()
    lowered = wire.query.replace("X-Amz-Signature=", "x-amz-SIGNATURE=")
    Wire(wire.method, wire.path, lowered, wire.headers).verify()


def test_presigned_with_signed_headers_and_unsigned_extra_header() -> None:
    wire = sign_with_botocore(
        "PUT", object_url("k"), [("x-amz-meta-color", "red")], presign_expires=60
    )
    assert "X-Amz-SignedHeaders=host%3Bx-amz-meta-color" in wire.query
    wire.verify()
    assert refusal(wire.with_header("x-amz-meta-color", "blue")).code == "SignatureDoesNotMatch"
    err = refusal(wire.with_header("x-amz-meta-size", "1"))
    assert err.extra == {"HeadersNotSigned": "x-amz-meta-size"}


def test_presigned_payload_hash_from_header() -> None:
    digest = hashlib.sha256(b"data").hexdigest()
    wire = sign_with_botocore(
        "PUT", object_url("k"), [("X-Amz-Content-SHA256", digest)], presign_expires=60
    )
    auth = wire.verify()
    assert auth.payload_hash == digest
    assert auth.payload_mode is PayloadMode.SIGNED


# --- Payload modes and the payload hash ------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("UNSIGNED-PAYLOAD", PayloadMode.UNSIGNED),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PayloadMode.STREAMING_SIGNED),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", PayloadMode.STREAMING_SIGNED_TRAILER),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", PayloadMode.STREAMING_UNSIGNED_TRAILER),
        (sigv4.EMPTY_SHA256, PayloadMode.SIGNED),
        (sigv4.EMPTY_SHA256.upper(), PayloadMode.SIGNED),
    ],
)
def test_payload_modes(value: str, mode: PayloadMode) -> None:
    assert sigv4.payload_mode_of(value) is mode


def test_payload_mode_properties() -> None:
    assert not PayloadMode.SIGNED.is_streaming
    assert PayloadMode.STREAMING_UNSIGNED_TRAILER.is_streaming
    assert PayloadMode.STREAMING_UNSIGNED_TRAILER.has_trailer
    assert not PayloadMode.STREAMING_UNSIGNED_TRAILER.chunks_signed
    assert PayloadMode.STREAMING_SIGNED.chunks_signed
    assert not PayloadMode.STREAMING_SIGNED.has_trailer


def test_payload_hash_verifier_mismatch() -> None:
    verifier = sigv4.PayloadHashVerifier(hashlib.sha256(b"expected").hexdigest().upper())
    verifier.update(b"other")
    with pytest.raises(S3Error) as caught:
        verifier.finish()
    assert (caught.value.code, caught.value.status) == ("XAmzContentSHA256Mismatch", 400)
    assert caught.value.extra == {
        "ClientComputedContentSHA256": hashlib.sha256(b"expected").hexdigest(),
        "S3ComputedContentSHA256": hashlib.sha256(b"other").hexdigest(),
    }


def test_payload_hash_verifier_with_garbage_expectation() -> None:
    verifier = sigv4.PayloadHashVerifier("ünicode")
    with pytest.raises(S3Error):
        verifier.finish()


def test_signature_that_is_not_hex() -> None:
    wire = sign_with_botocore("GET", object_url("k"))
    head, _, _ = wire.header("Authorization").rpartition("=")
    err = refusal(wire.with_header("Authorization", f"{head}=ü\udcff"))
    assert err.code == "SignatureDoesNotMatch"


def test_signing_key_stays_out_of_repr() -> None:
    auth = sign_with_botocore("GET", object_url("k")).verify()
    assert "signing_key" not in repr(auth)
    assert auth.signing_key == sigv4.derive_signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20240506", REGION
    )


def test_naive_now_is_taken_as_utc() -> None:
    sign_with_botocore("GET", object_url("k")).verify(NOW.replace(tzinfo=None))

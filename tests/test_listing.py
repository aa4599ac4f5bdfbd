"""Listing parity: a listing through the gateway equals the backend's own listing
of the same keys stored as plaintext.

Per backend, one bucket holds plaintext objects written directly and another
the same keys and sizes written (encrypted) through the gateway. Every scenario
lists both, the first directly and the second through the gateway, and compares
the pages. Only the bucket name, dates, ETags (digests of different bytes) and
opaque continuation tokens may differ; backend quirks cancel out because both
sides run on the same backend.
"""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.handlers import set_list_objects_encoding_type_url

from crypto import ciphertext_length
from tests.conftest import BACKEND_NAMES
from tests.harness import CHUNK_SIZE, Backend, Gateway, GatewayFactory, make_bucket

UPLOAD_THREADS = 16
MAX_PAGES = 20  # a listing that does not end is a failure, not a hang

# Sizes around the format's boundaries first, then small varied ones.
BOUNDARY_SIZES = [
    0, 1, 15, 16, 17, 47, 48, 63, 64, 65, 1000,
    CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE - 5, 200 * 1024,
]  # fmt: skip

# Keys a filesystem-backed server (rclone) can store: no key is also a "directory"
# of another key, no empty path segments, no trailing slashes, no control characters.
OTHER_KEYS = [
    "one/only",
    "tree/top.txt",
    "tree/x/1",
    "tree/x/2",
    "tree/x/y/3",
    "tree/x-y/4",
    "tree/y/5",
    "tree/y/z/w/6",
    "dash/a",
    "dash/a-b",
    "dash/a-b-c",
    "dash/b-1",
    "dash/b-2",
    "dash/c",
    "dash/c-/d",
    "uni/café",
    "uni/naïve/über",
    "uni/日本語/ファイル.txt",
    "uni/emoji-🙂",
    "uni/space key",
    "uni/plus+key",
    "uni/percent%20key",
    "uni/percent%2Fslash",
    "uni/amp&lt<gt>",
    "uni/quotes\"'",
    "uni/tilde~star*",
]
MANY_A = [f"many/a/{i:04d}" for i in range(1000)]
MANY_B = [f"many/b/{i:04d}" for i in range(1500)]
ALL_KEYS = [*OTHER_KEYS, *MANY_A, *MANY_B]


def size_of(index: int) -> int:
    if index < len(BOUNDARY_SIZES):
        return BOUNDARY_SIZES[index]
    if index % 97 == 0:
        return (index * 7919) % (200 * 1024)
    return (index * 31) % 2048


SIZES = {key: size_of(i) for i, key in enumerate(ALL_KEYS)}


@dataclass
class Scenario:
    id: str
    api: str  # "v2" or "v1"
    params: dict[str, Any]
    encoding: str = "auto"  # boto3's default (url, decoded by boto3), "url" (raw) or "none"


SCENARIOS = [
    Scenario("v2-everything", "v2", {}),
    Scenario("v2-2500-keys", "v2", {"Prefix": "many/"}),
    Scenario("v2-1000-keys", "v2", {"Prefix": "many/a/"}),
    Scenario("v2-1-key", "v2", {"Prefix": "one/"}),
    Scenario("v2-0-keys", "v2", {"Prefix": "none/"}),
    Scenario("v2-pages-of-333", "v2", {"Prefix": "many/", "MaxKeys": 333}),
    Scenario("v2-max-keys-0", "v2", {"MaxKeys": 0}),
    Scenario("v2-max-keys-1", "v2", {"Prefix": "tree/", "MaxKeys": 1}),
    Scenario("v2-root-delimiter", "v2", {"Delimiter": "/"}),
    Scenario("v2-nested-delimiter", "v2", {"Prefix": "tree/", "Delimiter": "/"}),
    Scenario("v2-deeper-delimiter", "v2", {"Prefix": "tree/x/", "Delimiter": "/"}),
    Scenario("v2-delimiter-pages", "v2", {"Prefix": "tree/", "Delimiter": "/", "MaxKeys": 2}),
    Scenario("v2-prefix-without-slash", "v2", {"Prefix": "tree/x", "Delimiter": "/"}),
    Scenario("v2-dash-delimiter", "v2", {"Prefix": "dash/", "Delimiter": "-"}),
    Scenario("v2-dash-delimiter-deeper", "v2", {"Prefix": "dash/a-", "Delimiter": "-"}),
    Scenario("v2-start-after", "v2", {"Prefix": "many/", "StartAfter": "many/a/0990"}),
    Scenario("v2-start-after-pages", "v2", {"StartAfter": "many/b/1200", "MaxKeys": 150}),
    Scenario("v2-fetch-owner", "v2", {"Prefix": "tree/", "FetchOwner": True}),
    Scenario("v2-unicode", "v2", {"Prefix": "uni/"}),
    Scenario("v2-unicode-delimiter", "v2", {"Prefix": "uni/", "Delimiter": "/"}),
    Scenario("v2-unicode-prefix", "v2", {"Prefix": "uni/日本語/"}),
    Scenario("v2-unicode-url-raw", "v2", {"Prefix": "uni/", "Delimiter": "/"}, "url"),
    Scenario("v2-unicode-unencoded", "v2", {"Prefix": "uni/", "Delimiter": "/"}, "none"),
    Scenario("v2-unicode-start-after", "v2", {"StartAfter": "uni/naïve", "MaxKeys": 3}, "url"),
    Scenario("v1-everything", "v1", {}),
    Scenario("v1-marker-pages", "v1", {"Prefix": "many/", "MaxKeys": 700}),
    Scenario("v1-marker-start", "v1", {"Marker": "many/b/1000", "MaxKeys": 400}),
    Scenario("v1-max-keys-0", "v1", {"MaxKeys": 0}),
    Scenario("v1-delimiter-pages", "v1", {"Delimiter": "/", "MaxKeys": 2}),
    Scenario(
        "v1-nested-delimiter-pages", "v1", {"Prefix": "tree/", "Delimiter": "/", "MaxKeys": 2}
    ),
    Scenario("v1-dash-delimiter", "v1", {"Prefix": "dash/", "Delimiter": "-"}),
    Scenario("v1-unicode-url-raw", "v1", {"Prefix": "uni/", "Delimiter": "/"}, "url"),
    Scenario("v1-unicode-unencoded", "v1", {"Prefix": "uni/"}, "none"),
]


@dataclass
class ListingBuckets:
    """Two buckets with the same keys and plaintext sizes on one backend."""

    backend: Backend
    gateway: Gateway
    plaintext_bucket: str  # written directly: what S3 would list
    encrypted_bucket: str  # written through the gateway
    direct: Any  # boto3 client on the backend
    through_gateway: Any  # boto3 client on the gateway


def _direct_client(backend: Backend) -> Any:
    # No upload checksums: the gateway stores none either, and listings would
    # otherwise differ in <ChecksumAlgorithm>.
    return backend.client(
        config=Config(
            request_checksum_calculation="when_required",
            max_pool_connections=UPLOAD_THREADS,
        )
    )


def _fill(client: Any, bucket: str, sizes: dict[str, int]) -> None:
    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * sizes[key])

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(put, sizes))


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def listing_buckets(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory
) -> ListingBuckets:
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    gateway = gateway_factory(backend)
    direct = _direct_client(backend)
    through_gateway = gateway.client(config=Config(max_pool_connections=UPLOAD_THREADS))
    plaintext_bucket = make_bucket(backend, "plain")
    encrypted_bucket = make_bucket(backend, "encrypted")
    with ThreadPoolExecutor(2) as pool:
        filled = [
            pool.submit(_fill, direct, plaintext_bucket, SIZES),
            pool.submit(_fill, through_gateway, encrypted_bucket, SIZES),
        ]
        for future in filled:
            future.result()
    return ListingBuckets(
        backend, gateway, plaintext_bucket, encrypted_bucket, direct, through_gateway
    )


@pytest.fixture
def buckets(listing_buckets: ListingBuckets, gateway_factory: GatewayFactory) -> ListingBuckets:
    gateway_factory(listing_buckets.backend)  # attaches the gateway's log to failures
    return listing_buckets


# -- listing helpers --------------------------------------------------------------


def _unencoded(client: Any) -> Any:
    """``client`` sending no encoding-type unless asked (boto3 adds url by default)."""
    for operation in ("ListObjects", "ListObjectsV2", "ListObjectVersions"):
        client.meta.events.unregister(
            f"before-parameter-build.s3.{operation}", set_list_objects_encoding_type_url
        )
    return client


_VOLATILE_ENTRY_FIELDS = ("LastModified", "ETag", "VersionId")


def _comparable(page: dict[str, Any]) -> dict[str, Any]:
    """A listing page without what legitimately differs between the two buckets."""
    page = {k: v for k, v in page.items() if k not in ("ResponseMetadata", "Name")}
    for token in (
        "ContinuationToken",
        "NextContinuationToken",
        "VersionIdMarker",
        "NextVersionIdMarker",
    ):
        if token in page:
            page[token] = "<token>"
    for entries in ("Contents", "Versions", "DeleteMarkers"):
        if entries in page:
            page[entries] = [
                {k: v for k, v in entry.items() if k not in _VOLATILE_ENTRY_FIELDS}
                for entry in page[entries]
            ]
    return page


def _pages(client: Any, bucket: str, scenario: Scenario) -> list[dict[str, Any]]:
    """Every page of a listing, following continuation tokens or markers."""
    params = dict(scenario.params)
    if scenario.encoding == "url":
        params["EncodingType"] = "url"
    pages: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if scenario.api == "v2":
            page = client.list_objects_v2(Bucket=bucket, **params)
        else:
            page = client.list_objects(Bucket=bucket, **params)
        pages.append(page)
        if not page["IsTruncated"] or params.get("MaxKeys") == 0:
            return pages
        if scenario.api == "v2":
            params["ContinuationToken"] = page["NextContinuationToken"]
        else:
            # S3 sends NextMarker only with a delimiter; otherwise the last key is the marker.
            params["Marker"] = page.get("NextMarker") or page["Contents"][-1]["Key"]
    raise AssertionError(f"{scenario.id}: more than {MAX_PAGES} pages")


def _listed_keys(pages: list[dict[str, Any]]) -> list[str]:
    return [entry["Key"] for page in pages for entry in page.get("Contents", [])]


def _clients_for(buckets: ListingBuckets, scenario: Scenario) -> tuple[Any, Any]:
    """(direct, through the gateway) clients for ``scenario``; fresh ones to unregister from."""
    if scenario.encoding != "none":
        return buckets.direct, buckets.through_gateway
    return _unencoded(_direct_client(buckets.backend)), _unencoded(buckets.gateway.client())


# -- tests ------------------------------------------------------------------------


def test_gateway_bucket_stores_ciphertext(buckets: ListingBuckets) -> None:
    """The premise of every other test: the two buckets differ in stored sizes."""
    stored = {
        entry["Key"]: entry["Size"]
        for page in _pages(buckets.direct, buckets.encrypted_bucket, Scenario("all", "v2", {}))
        for entry in page["Contents"]
    }
    assert stored == {key: ciphertext_length(size, CHUNK_SIZE) for key, size in SIZES.items()}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_listing_matches_backend(buckets: ListingBuckets, scenario: Scenario) -> None:
    direct, through_gateway = _clients_for(buckets, scenario)
    expected = _pages(direct, buckets.plaintext_bucket, scenario)
    got = _pages(through_gateway, buckets.encrypted_bucket, scenario)
    assert [_comparable(p) for p in got] == [_comparable(p) for p in expected]
    for page in got:
        assert page.get("EncodingType") == (None if scenario.encoding == "none" else "url")
        for entry in page.get("Contents", []):
            key = unquote_plus(entry["Key"]) if scenario.encoding == "url" else entry["Key"]
            assert entry["Size"] == SIZES[key], key


def test_listings_cover_the_whole_data_set(buckets: ListingBuckets) -> None:
    pages = _pages(buckets.through_gateway, buckets.encrypted_bucket, Scenario("all", "v2", {}))
    assert sorted(_listed_keys(pages)) == sorted(ALL_KEYS)
    assert [len(p["Contents"]) for p in pages] == [1000, 1000, len(ALL_KEYS) - 2000]


_RAW_VOLATILE = [
    (re.compile(rb"<Name>[^<]*</Name>"), b"<Name/>"),
    (re.compile(rb"<LastModified>[^<]*</LastModified>"), b"<LastModified/>"),
    (re.compile(rb"<ETag>[^<]*</ETag>"), b"<ETag/>"),
]


def _raw_listing(client: Any, bucket: str, **params: Any) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a ListObjectsV2 answer as they came over the wire."""
    captured: dict[str, Any] = {}

    def capture(response_dict: dict[str, Any], **_: Any) -> None:
        captured.update(response_dict)

    client.meta.events.register("before-parse.s3.ListObjectsV2", capture)
    try:
        client.list_objects_v2(Bucket=bucket, **params)
    finally:
        client.meta.events.unregister("before-parse.s3.ListObjectsV2", capture)
    return captured["body"], {k.lower(): v for k, v in captured["headers"].items()}


def _without_volatile(body: bytes) -> bytes:
    for pattern, replacement in _RAW_VOLATILE:
        body = pattern.sub(replacement, body)
    return body


@pytest.mark.parametrize("prefix", ["uni/", "tree/", "dash/"])
def test_raw_listing_is_the_backends_document(buckets: ListingBuckets, prefix: str) -> None:
    """Byte for byte the backend's XML (namespace, order, escaping, url-encoding),
    with a Content-Length that fits the rewritten body."""
    params = {"Prefix": prefix, "Delimiter": "/", "EncodingType": "url"}
    expected, _ = _raw_listing(buckets.direct, buckets.plaintext_bucket, **params)
    got, headers = _raw_listing(buckets.through_gateway, buckets.encrypted_bucket, **params)
    assert _without_volatile(got) == _without_volatile(expected)
    if "content-length" in headers:
        assert int(headers["content-length"]) == len(got)
    else:
        assert headers.get("transfer-encoding") == "chunked"


def test_objects_stored_before_the_gateway(
    backend: Backend, gateway_factory: GatewayFactory
) -> None:
    """Sizes no encrypted object can have are listed as stored; others are taken
    for ciphertext (ADR 0004: a HEAD or GET shows the exact size)."""
    bucket = make_bucket(backend)
    direct = _direct_client(backend)
    direct.put_object(Bucket=bucket, Key="legacy-small", Body=b"x" * 10)
    direct.put_object(Bucket=bucket, Key="legacy-large", Body=b"x" * 100)
    s3 = gateway_factory(backend).client()
    listed = {e["Key"]: e["Size"] for e in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == {"legacy-small": 10, "legacy-large": 100 - 48 - 16}
    assert s3.head_object(Bucket=bucket, Key="legacy-large")["ContentLength"] == 100


def test_empty_bucket(backend: Backend, gateway_factory: GatewayFactory) -> None:
    plaintext_bucket, encrypted_bucket = make_bucket(backend), make_bucket(backend)
    s3 = gateway_factory(backend).client()
    direct = backend.client()
    for scenario in (Scenario("v2", "v2", {}), Scenario("v1", "v1", {"Delimiter": "/"})):
        expected = _pages(direct, plaintext_bucket, scenario)
        got = _pages(s3, encrypted_bucket, scenario)
        assert [_comparable(p) for p in got] == [_comparable(p) for p in expected]


@pytest.fixture
def versioned_buckets(backend: Backend) -> tuple[str, str]:
    buckets = (make_bucket(backend), make_bucket(backend))
    for bucket in buckets:
        # rclone has no versioning: its (unversioned) listings are compared instead.
        with contextlib.suppress(ClientError):
            backend.client().put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
    return buckets


def _version_pages(client: Any, bucket: str, **params: Any) -> list[dict[str, Any]]:
    pages = []
    for _ in range(MAX_PAGES):
        page = client.list_object_versions(Bucket=bucket, **params)
        pages.append(page)
        if not page["IsTruncated"]:
            return pages
        params["KeyMarker"] = page["NextKeyMarker"]
        params["VersionIdMarker"] = page["NextVersionIdMarker"]
    raise AssertionError(f"more than {MAX_PAGES} pages")


def test_version_listing_matches_backend(
    backend: Backend, gateway_factory: GatewayFactory, versioned_buckets: tuple[str, str]
) -> None:
    plaintext_bucket, encrypted_bucket = versioned_buckets
    direct = _direct_client(backend)
    s3 = gateway_factory(backend).client()
    writes = [("a", 10), ("a", 70_000), ("b/c", 0), ("b/d", CHUNK_SIZE), ("é", 5)]
    for client, bucket in ((direct, plaintext_bucket), (s3, encrypted_bucket)):
        for key, size in writes:
            client.put_object(Bucket=bucket, Key=key, Body=b"v" * size)
        client.delete_object(Bucket=bucket, Key="b/c")
    for params in ({}, {"MaxKeys": 2}, {"Prefix": "b/", "Delimiter": "/"}):
        try:
            expected = _version_pages(direct, plaintext_bucket, **params)
        except ClientError as error:
            # rclone does not implement ListObjectVersions: the gateway must answer alike.
            with pytest.raises(ClientError) as caught:
                _version_pages(s3, encrypted_bucket, **params)
            assert caught.value.response["Error"]["Code"] == error.response["Error"]["Code"]
            continue
        got = _version_pages(s3, encrypted_bucket, **params)
        assert [_comparable(p) for p in got] == [_comparable(p) for p in expected]
        if not params:
            sizes = [v["Size"] for p in got for v in p.get("Versions", [])]
            assert sorted(sizes) == sorted(size for _, size in writes)

"""Size rewriting of bucket listings (addons.s3.listxml)."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.s3.listxml import (
    MAX_LISTING_BYTES,
    ListingError,
    listed_plaintext_size,
    plaintext_listing,
)
from crypto import ciphertext_length
from crypto.sizes import frames_ciphertext_length

CHUNK = 65536
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def stored(size: int) -> int:
    return ciphertext_length(size, CHUNK)


def contents(
    key: str, size: int, etag: str = "&quot;9b2cf535f27731c974343645a3985328&quot;"
) -> str:
    return (
        f"<Contents><Key>{key}</Key><LastModified>2024-05-06T07:08:09.000Z</LastModified>"
        f"<ETag>{etag}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


def sizes_of(document: bytes, entry: str = "Contents") -> list[int]:
    root = ET.fromstring(document)
    return [int(e.findtext(f"{{{NS}}}Size") or "") for e in root.iter(f"{{{NS}}}{entry}")]


def rewritten(document: str) -> bytes:
    return plaintext_listing(document.encode("utf-8"), CHUNK)


# -- the size rule ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 10**9])
def test_single_frame_sizes_map_back(size: int) -> None:
    assert listed_plaintext_size(stored(size), '"abc"', CHUNK) == size


@pytest.mark.parametrize("size", [0, 1, 63])
def test_sizes_too_short_for_a_frame_are_kept(size: int) -> None:
    assert listed_plaintext_size(size, '"abc"', CHUNK) == size


def test_sizes_between_valid_lengths_are_kept() -> None:
    # One full chunk is 48 + C + 16 bytes; the next valid length adds a chunk's tag too.
    impossible = stored(CHUNK) + 1
    assert listed_plaintext_size(impossible, None, CHUNK) == impossible


def test_multipart_sizes_use_one_frame_per_part() -> None:
    parts = [5 * 1024 * 1024, 5 * 1024 * 1024, 1234]
    size = frames_ciphertext_length(parts, CHUNK)
    etag = '"d41d8cd98f00b204e9800998ecf8427e-3"'
    assert listed_plaintext_size(size, etag, CHUNK) == sum(parts)


def test_multipart_sizes_that_do_not_fit_the_layout_are_kept() -> None:
    # A plaintext multipart object (written before the gateway): 3 parts cannot
    # hold fewer than two whole chunks.
    etag = '"d41d8cd98f00b204e9800998ecf8427e-3"'
    assert listed_plaintext_size(500, etag, CHUNK) == 500
    assert listed_plaintext_size(stored(1000) + 96, etag, CHUNK) == stored(1000) + 96


# -- documents --------------------------------------------------------------------


def test_list_objects_v1() -> None:
    document = (
        f'{DECLARATION}<ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix></Prefix>'
        "<Marker></Marker><NextMarker>b</NextMarker><MaxKeys>2</MaxKeys>"
        "<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>"
        f"{contents('a', stored(0))}{contents('b', stored(70000))}"
        "<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes></ListBucketResult>"
    )
    out = rewritten(document)
    assert sizes_of(out) == [0, 70000]
    # Nothing but the numbers changed.
    expected = document.replace(f"<Size>{stored(0)}<", "<Size>0<").replace(
        f"<Size>{stored(70000)}<", "<Size>70000<"
    )
    assert out == expected.encode("utf-8")


def test_list_objects_v2_with_common_prefixes_keeps_every_other_byte() -> None:
    document = (
        f'{DECLARATION}<ListBucketResult xmlns="{NS}">\n  <Name>b</Name>\n'
        "  <Prefix>photos/</Prefix>\n  <KeyCount>3</KeyCount>\n  <MaxKeys>1000</MaxKeys>\n"
        "  <Delimiter>/</Delimiter>\n  <IsTruncated>false</IsTruncated>\n"
        f"  {contents('photos/a&amp;b &lt;1&gt;.jpg', stored(12345))}\n"
        "  <CommonPrefixes><Prefix>photos/2023/</Prefix></CommonPrefixes>\n"
        "  <CommonPrefixes><Prefix>photos/2024/</Prefix></CommonPrefixes>\n"
        "  <ContinuationToken>tok</ContinuationToken>\n</ListBucketResult>\n"
    )
    out = rewritten(document)
    assert out == document.replace(f"<Size>{stored(12345)}<", "<Size>12345<").encode()
    assert "ns0:" not in out.decode()
    root = ET.fromstring(out)
    assert root.findtext(f"{{{NS}}}Contents/{{{NS}}}Key") == "photos/a&b <1>.jpg"
    assert [p.text for p in root.iter(f"{{{NS}}}Prefix")][1:] == ["photos/2023/", "photos/2024/"]


def test_url_encoded_keys_are_left_encoded() -> None:
    key = "caf%C3%A9/na%C3%AFve+file%2B%0A.txt"
    document = (
        f'<ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix>caf%C3%A9%2F</Prefix>'
        f"<KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType>"
        f"<IsTruncated>false</IsTruncated>{contents(key, stored(5))}</ListBucketResult>"
    )
    out = rewritten(document)
    assert out == document.replace(f"<Size>{stored(5)}<", "<Size>5<").encode()


def test_unicode_keys_are_kept_byte_for_byte() -> None:
    document = (
        f'<ListBucketResult xmlns="{NS}"><Name>b</Name>'
        f"{contents('日本語/ключ-🙂', stored(42))}</ListBucketResult>"
    )
    assert rewritten(document) == document.replace(f">{stored(42)}<", ">42<").encode()


def test_versions_rewrite_versions_and_leave_delete_markers() -> None:
    document = (
        f'{DECLARATION}<ListVersionsResult xmlns="{NS}"><Name>b</Name><Prefix></Prefix>'
        "<KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>false</IsTruncated>"
        "<Version><Key>k</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest>"
        f"<LastModified>2024-05-06T07:08:09.000Z</LastModified><ETag>&quot;e&quot;</ETag>"
        f"<Size>{stored(300000)}</Size><StorageClass>STANDARD</StorageClass></Version>"
        "<DeleteMarker><Key>gone</Key><VersionId>v9</VersionId><IsLatest>true</IsLatest>"
        "<LastModified>2024-05-06T07:08:09.000Z</LastModified></DeleteMarker>"
        "<Version><Key>k</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>"
        f"<LastModified>2024-05-06T07:08:09.000Z</LastModified><ETag>&quot;e&quot;</ETag>"
        f"<Size>{stored(1)}</Size><StorageClass>STANDARD</StorageClass></Version>"
        "</ListVersionsResult>"
    )
    out = rewritten(document)
    assert sizes_of(out, "Version") == [300000, 1]
    assert b"<DeleteMarker><Key>gone</Key>" in out


def test_legacy_sizes_in_a_listing_are_kept() -> None:
    document = f'<ListBucketResult xmlns="{NS}">{contents("old", 10)}</ListBucketResult>'
    assert plaintext_listing(document.encode(), CHUNK) == document.encode()


def test_empty_listing_is_returned_unchanged() -> None:
    document = (
        f'{DECLARATION}<ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix></Prefix>'
        "<KeyCount>0</KeyCount><MaxKeys>0</MaxKeys><IsTruncated>false</IsTruncated>"
        "</ListBucketResult>"
    ).encode()
    assert plaintext_listing(document, CHUNK) is document


def test_without_namespace_and_with_whitespace_around_the_size() -> None:
    document = (
        f"<ListBucketResult><Contents><Size>\n {stored(9)} </Size></Contents></ListBucketResult>"
    )
    assert (
        rewritten(document)
        == b"<ListBucketResult><Contents><Size>9</Size></Contents></ListBucketResult>"
    )


def test_chunk_size_is_the_configured_one() -> None:
    entry = contents("k", ciphertext_length(5000, 1024))
    document = f'<ListBucketResult xmlns="{NS}">{entry}</ListBucketResult>'
    assert sizes_of(plaintext_listing(document.encode(), 1024)) == [5000]


# -- refused documents ------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not xml",
        b'<ListBucketResult xmlns="' + NS.encode() + b'"><Contents><Size>1</Size>',
        b"<ListBucketResult><Contents><Size>12</Sise></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Size>-5</Size></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Size>12a</Size></Contents></ListBucketResult>",
        b"<Error><Code>InternalError</Code></Error>",
        b"<ListMultipartUploadsResult></ListMultipartUploadsResult>",
        b'<?xml version="1.0" encoding="no-such-encoding"?><ListBucketResult/>',
        b"<ListBucketResult><Contents><Size>"
        + b"9" * 5000
        + b"</Size></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Size>1&#48;0</Size></Contents></ListBucketResult>",
    ],
    ids=[
        "empty",
        "text",
        "truncated",
        "mismatched-tag",
        "negative",
        "not-a-number",
        "error",
        "other",
        "unknown-encoding",
        "too-many-digits",
        "character-reference",
    ],
)
def test_malformed_listings_are_refused(document: bytes) -> None:
    with pytest.raises(ListingError):
        plaintext_listing(document, CHUNK)


def test_huge_listing_is_refused_before_parsing() -> None:
    entry = contents("k" * 200, stored(1)).encode()
    document = b"<ListBucketResult>" + entry * (MAX_LISTING_BYTES // len(entry) + 1)
    # Not even closed: it must be refused for its size, not parsed.
    with pytest.raises(ListingError, match="larger than"):
        plaintext_listing(document, CHUNK)
    with pytest.raises(ListingError, match="larger than"):
        plaintext_listing(b"<a/>" + b" " * 100, CHUNK, max_bytes=100)


@pytest.mark.parametrize(
    "document",
    [
        # Billion laughs.
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<ListBucketResult><Contents><Key>&lol2;</Key><Size>100</Size></Contents>"
        b"</ListBucketResult>",
        # External entity.
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<ListBucketResult><Contents><Key>&x;</Key><Size>100</Size></Contents>"
        b"</ListBucketResult>",
        # A DTD without entities.
        b'<?xml version="1.0"?><!DOCTYPE ListBucketResult SYSTEM "http://example.com/s3.dtd">'
        b"<ListBucketResult></ListBucketResult>",
    ],
    ids=["billion-laughs", "external-entity", "dtd"],
)
def test_entity_declarations_and_dtds_are_refused(document: bytes) -> None:
    with pytest.raises(ListingError):
        plaintext_listing(document, CHUNK)


_SAMPLE = (
    f'{DECLARATION}<ListBucketResult xmlns="{NS}"><Name>b</Name>'
    f"{contents('a', stored(200_000), etag='&quot;0a1b-2&quot;')}{contents('b', stored(7))}"
    "<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes></ListBucketResult>"
).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_SAMPLE)),
            st.integers(0, 3),
            st.binary(max_size=3) | st.sampled_from([b"<", b">", b"&", b"&#0;", b"9" * 30]),
        ),
        max_size=4,
    )
)
def test_damaged_listings_raise_only_listing_errors(edits: list[tuple[int, int, bytes]]) -> None:
    """Backend bodies are untrusted: anything else escaping would crash the hook."""
    document = _SAMPLE
    for position, removed, inserted in edits:
        document = document[:position] + inserted + document[position + removed :]
    with contextlib.suppress(ListingError):
        plaintext_listing(document, CHUNK)

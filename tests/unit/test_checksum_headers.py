"""drop_checksum_headers: answers about plaintext carry no digest of the ciphertext."""

from __future__ import annotations

from mitmproxy import http

from addons.bodycrypto import drop_checksum_headers


def test_every_checksum_header_goes_in_any_case_and_the_rest_stays_in_order() -> None:
    headers = http.Headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"X-Amz-Checksum-CRC32", b"AAAAAA=="),
            (b"ETag", b'"e"'),
            (b"content-md5", b"bWQ1"),
            (b"x-amz-checksum-type", b"FULL_OBJECT"),
            (b"x-amz-meta-checksum", b"kept: user metadata"),
        ]
    )
    drop_checksum_headers(headers)
    assert headers.fields == (
        (b"Content-Type", b"text/plain"),
        (b"ETag", b'"e"'),
        (b"x-amz-meta-checksum", b"kept: user metadata"),
    )


def test_headers_without_checksums_are_left_alone() -> None:
    headers = http.Headers([(b"ETag", b'"e"')])
    fields = headers.fields
    drop_checksum_headers(headers)
    assert headers.fields is fields

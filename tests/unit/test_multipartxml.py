"""Multipart upload documents (addons.s3.multipartxml)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.s3.errors import S3Error
from addons.s3.multipartxml import (
    MAX_COMPLETE_BODY,
    BackendDocumentError,
    CompletedPart,
    complete_request_xml,
    multipart_part_count,
    parse_complete_request,
    parse_parts_page,
    part_number,
    rewrite_texts,
    upload_id_of,
)

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def complete_body(*parts: str, ns: bool = True) -> bytes:
    xmlns = f' xmlns="{NS}"' if ns else ""
    return f"<CompleteMultipartUpload{xmlns}>{''.join(parts)}</CompleteMultipartUpload>".encode()


def part(number: object, etag: str = '"abc"', extra: str = "") -> str:
    return f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag>{extra}</Part>"


def code_of(body: bytes) -> str:
    with pytest.raises(S3Error) as caught:
        parse_complete_request(body)
    return caught.value.code


def test_parses_parts_with_or_without_namespace_and_checksums() -> None:
    body = complete_body(
        part(1, "&quot;e1&quot;", "<ChecksumCRC32>AAAAAA==</ChecksumCRC32>"),
        "\n  ",
        part(3, '"e3"'),
    )
    assert parse_complete_request(body) == [CompletedPart(1, '"e1"'), CompletedPart(3, '"e3"')]
    assert parse_complete_request(complete_body(part(2), ns=False)) == [CompletedPart(2, '"abc"')]


def test_round_trip_of_the_forwarded_body() -> None:
    parts = [CompletedPart(1, '"a&b"'), CompletedPart(2, '"c"')]
    assert parse_complete_request(complete_request_xml(parts)) == parts


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<CompleteMultipartUpload>",
        complete_body(),  # no parts
        b"<Other>" + part(1).encode() + b"</Other>",
        complete_body("<Unknown/>"),
        complete_body(part(1, extra="<PartNumber>2</PartNumber>")),
        complete_body("<Part><PartNumber>1</PartNumber></Part>"),
        complete_body("<Part><ETag>x</ETag></Part>"),
        complete_body(part("one")),
        complete_body(part(1, extra="<ChecksumMD6>x</ChecksumMD6>")),
        complete_body("text", part(1)),
        complete_body(part(1, etag="<b>x</b>")),
        b'<!DOCTYPE x [<!ENTITY e "boom">]>' + complete_body(part(1, etag="&e;")),
        b'<!DOCTYPE x SYSTEM "http://example.com/x.dtd">' + complete_body(part(1)),
        complete_body(part(1)) + b"<trailing/>",
        complete_body(part(1), "<Part>" + "<X/>" * 100_000 + "</Part>"),
        b" " * (MAX_COMPLETE_BODY + 1),
    ],
)
def test_malformed_xml(body: bytes) -> None:
    assert code_of(body) == "MalformedXML"


@pytest.mark.parametrize("numbers", [(2, 1), (1, 1), (1, 3, 2)])
def test_part_order(numbers: tuple[int, ...]) -> None:
    assert code_of(complete_body(*[part(n) for n in numbers])) == "InvalidPartOrder"


@pytest.mark.parametrize("number", [0, 10_001, "099999"])
def test_part_number_range(number: object) -> None:
    assert code_of(complete_body(part(number))) == "InvalidArgument"


def test_part_number_parameter() -> None:
    assert part_number("7") == 7
    for bad in (None, "", "0", "10001", "x", "-1"):
        with pytest.raises(S3Error) as caught:
            part_number(bad)
        assert caught.value.code == "InvalidArgument"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(alphabet="<>/ PartNumbeETagCompltMuiUpod0123456789&;\"'!=x", max_size=300).map(
            str.encode
        ),
        st.lists(st.integers(-2, 10_002), max_size=8).map(
            lambda ns: complete_body(*[part(n) for n in ns])
        ),
    )
)
def test_parser_raises_only_s3_errors(body: bytes) -> None:
    try:
        parts = parse_complete_request(body)
    except S3Error as error:
        assert error.code in ("MalformedXML", "InvalidPartOrder", "InvalidArgument")
        assert error.status == 400
        return
    numbers = [p.number for p in parts]
    assert numbers == sorted(set(numbers)) and numbers[0] >= 1 and numbers[-1] <= 10_000


# --------------------------------------------------------------------------- backend documents

INITIATE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Bucket>b</Bucket><Key>a &amp; b</Key><UploadId>abc+/=</UploadId>"
    b"</InitiateMultipartUploadResult>"
)
LIST_PARTS = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult>\n'
    b"  <Bucket>b</Bucket>\n  <Key>k</Key>\n  <UploadId>abc</UploadId>\n"
    b"  <NextPartNumberMarker>2</NextPartNumberMarker>\n  <IsTruncated>true</IsTruncated>\n"
    b"  <Part><PartNumber>1</PartNumber><ETag>&#34;e1&#34;</ETag><Size>5243008</Size></Part>\n"
    b'  <Part><PartNumber>2</PartNumber><ETag>"e2"</ETag><Size>65</Size></Part>\n'
    b"</ListPartsResult>"
)


def test_upload_id_is_replaced_byte_for_byte() -> None:
    assert upload_id_of(INITIATE) == "abc+/="
    rewritten = rewrite_texts(INITIATE, {("UploadId",): lambda old: "s3gw1.<&>"})
    assert rewritten == INITIATE.replace(b"abc+/=", b"s3gw1.&lt;&amp;&gt;")
    assert upload_id_of(rewritten) == "s3gw1.<&>"


def test_list_parts_page_and_size_rewrite() -> None:
    page = parse_parts_page(LIST_PARTS)
    assert [(p.number, p.etag, p.size) for p in page.parts] == [(1, "e1", 5243008), (2, "e2", 65)]
    assert page.next_marker == 2
    last = parse_parts_page(LIST_PARTS.replace(b"true", b"false"))
    assert last.next_marker is None
    rewritten = rewrite_texts(
        LIST_PARTS,
        {("UploadId",): lambda _: "token", ("Part", "Size"): lambda size: str(int(size) - 1)},
    )
    assert b"<Size>5243007</Size>" in rewritten and b"<Size>64</Size>" in rewritten
    assert b"<UploadId>token</UploadId>" in rewritten
    assert (
        rewritten.replace(b"token", b"abc")
        .replace(b"5243007", b"5243008")
        .replace(b"<Size>64<", b"<Size>65<")
        == LIST_PARTS
    )


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"<InitiateMultipartUploadResult/>",
        b"<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>",
        b'<!DOCTYPE x [<!ENTITY e "x">]><R><UploadId>&e;</UploadId></R>',
    ],
)
def test_unusable_initiate_results(document: bytes) -> None:
    with pytest.raises(BackendDocumentError):
        upload_id_of(document)


def test_unlocatable_texts_are_refused() -> None:
    with pytest.raises(BackendDocumentError):
        rewrite_texts(b"<R><UploadId>a&#34;b</UploadId></R>", {("UploadId",): lambda _: "t"})
    with pytest.raises(BackendDocumentError):
        parse_parts_page(b"<R><Part><PartNumber>x</PartNumber></Part></R>")


@pytest.mark.parametrize(
    ("etag", "count"),
    [
        ('"abc-3"', 3),
        ("abc-10000", 10_000),
        ('"abc"', None),
        ('"abc-0"', None),
        ("-3", None),
        ('"abc-10001"', None),
        (None, None),
    ],
)
def test_multipart_part_count(etag: str | None, count: int | None) -> None:
    assert multipart_part_count(etag) == count

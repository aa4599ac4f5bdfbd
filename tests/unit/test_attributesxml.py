"""GetObjectAttributes answers rewritten for encrypted objects, and the byte edits under them."""

from __future__ import annotations

import pytest

from addons.s3.attributesxml import plaintext_attributes, read_attributes
from addons.s3.multipartxml import BackendDocumentError, rewrite_texts
from addons.s3.xmledit import element_end, splice, text_start
from crypto.sizes import ciphertext_length

CHUNK = 65536
# As AWS writes it (one line, namespace), with a checksum and parts.
ANSWER = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<GetObjectAttributesResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<ETag>7e1f-2</ETag>"
    b"<Checksum><ChecksumCRC32>uJadeA==</ChecksumCRC32><ChecksumType>COMPOSITE</ChecksumType>"
    b"</Checksum>"
    b"<ObjectParts><TotalPartsCount>2</TotalPartsCount><PartNumberMarker>0</PartNumberMarker>"
    b"<NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>1000</MaxParts>"
    b"<IsTruncated>false</IsTruncated>"
    b"<Part><ChecksumCRC32>AAAAAA==</ChecksumCRC32><PartNumber>1</PartNumber>"
    b"<Size>%d</Size></Part>"
    b"<Part><PartNumber>2</PartNumber><Size>%d</Size><ChecksumSHA256>x</ChecksumSHA256></Part>"
    b"</ObjectParts>"
    b"<StorageClass>STANDARD</StorageClass><ObjectSize>%d</ObjectSize>"
    b"</GetObjectAttributesResponse>"
)
FIRST, LAST = 5 * 1024 * 1024, 1000
STORED = (ciphertext_length(FIRST, CHUNK), ciphertext_length(LAST, CHUNK))


def test_sizes_become_plaintext_and_checksums_go() -> None:
    document = ANSWER % (*STORED, sum(STORED))
    answer = read_attributes(document)
    assert answer.etag == "7e1f-2" and answer.describes_stored_bytes
    rewritten = plaintext_attributes(document, FIRST + LAST, CHUNK)
    expected = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<GetObjectAttributesResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<ETag>7e1f-2</ETag>"
        b"<ObjectParts><TotalPartsCount>2</TotalPartsCount><PartNumberMarker>0</PartNumberMarker>"
        b"<NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>1000</MaxParts>"
        b"<IsTruncated>false</IsTruncated>"
        b"<Part><PartNumber>1</PartNumber><Size>5242880</Size></Part>"
        b"<Part><PartNumber>2</PartNumber><Size>1000</Size></Part>"
        b"</ObjectParts>"
        b"<StorageClass>STANDARD</StorageClass><ObjectSize>5243880</ObjectSize>"
        b"</GetObjectAttributesResponse>"
    )
    assert rewritten == expected


def test_answers_without_stored_bytes_are_recognised() -> None:
    document = (
        b"<GetObjectAttributesResponse><ETag>abc</ETag><StorageClass>STANDARD</StorageClass>"
        b"</GetObjectAttributesResponse>"
    )
    assert read_attributes(document).describes_stored_bytes is False
    assert read_attributes(b"<GetObjectAttributesResponse/>").etag is None


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"<ListBucketResult/>",
        b"<GetObjectAttributesResponse><ObjectSize>1</ObjectSize>",
        b'<!DOCTYPE x [<!ENTITY e "1">]><GetObjectAttributesResponse/>',
    ],
)
def test_unreadable_answers_are_refused(document: bytes) -> None:
    with pytest.raises(BackendDocumentError):
        read_attributes(document)


@pytest.mark.parametrize(
    "object_size, part_size",
    [("-1", "100"), ("12a", "100"), ("100", "17")],  # 17 bytes is no S3G1 frame
)
def test_sizes_that_are_not_ciphertext_lengths_are_refused(
    object_size: str, part_size: str
) -> None:
    document = (
        b"<GetObjectAttributesResponse><ObjectParts><Part><Size>%s</Size></Part></ObjectParts>"
        b"<ObjectSize>%s</ObjectSize></GetObjectAttributesResponse>"
        % (part_size.encode(), object_size.encode())
    )
    if part_size == "100":
        document = document.replace(b"<Size>100<", b"<Size>%d<" % ciphertext_length(10, CHUNK))
    with pytest.raises(BackendDocumentError):
        plaintext_attributes(document, 10, CHUNK)


def test_removing_empty_and_nested_elements() -> None:
    document = b"<R><A/><B><A>1</A></B>\n  <A x='1'>2</A><C>3</C></R>"
    assert rewrite_texts(document, {("C",): lambda t: t + "!"}, remove=[("A",)]) == (
        b"<R><B><A>1</A></B>\n  <C>3!</C></R>"
    )
    # A text to replace inside an element that goes: the edits would overlap.
    with pytest.raises(BackendDocumentError):
        rewrite_texts(document, {("B", "A"): str}, remove=[("B",)])


def test_byte_edit_helpers() -> None:
    document = b"<a><b>x &amp; y</b><c>z</c></a>"
    end_of_b = document.index(b"</b>")
    assert text_start(document, "x & y", end_of_b) == document.index(b"x &amp;")
    with pytest.raises(ValueError):
        text_start(document, "x & z", end_of_b)
    assert document[element_end(document, end_of_b) :].startswith(b"<c>")
    empty = b"<a><b/><c>z</c></a>"
    assert element_end(empty, empty.index(b"<c>")) == empty.index(b"<c>")
    with pytest.raises(ValueError):  # <b/> has no text to replace
        text_start(empty, "", empty.index(b"<c>"))
    assert splice(document, []) is document
    assert splice(document, [(6, 15, b"n"), (0, 3, b"<A>")]) == b"<A><b>n</b><c>z</c></a>"
    with pytest.raises(ValueError):
        splice(document, [(0, 5, b""), (4, 6, b"")])

"""Property-based fuzzing of the parsers that read client and backend input.

Every parser of untrusted input must either return or raise its documented
error type: ``S3Error`` for what a client sends (answered as S3's XML error),
``CryptoError`` for stored metadata and upload-id tokens,
``BackendDocumentError``/``ListingError`` for backend documents. Anything else
(``IndexError``, ``KeyError``, ``UnicodeError``, ``OverflowError``,
``LookupError``, ...) escaping from a mitmproxy hook used to be logged and the
flow carried on (``addons/failsafe.py`` now fails closed, but a crash is still
a 500 instead of S3's answer).

Inputs are arbitrary text and bytes, and valid inputs (requests signed by
botocore, aws-chunked bodies with a correct signature chain, well-formed XML,
sealed envelopes and tokens) with random edits. Strings are decoded from
arbitrary bytes with ``surrogateescape``, as mitmproxy hands header values to
the addons.

Each property runs twice: a quick run of a few hundred examples in the normal
suite, and a ``slow`` run with many more (CI runs both).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mitmproxy import http

from addons.bodycheck import _length
from addons.limits import delete_objects_key_count, user_metadata_bytes
from addons.s3 import sigv4
from addons.s3.attributesxml import plaintext_attributes, read_attributes
from addons.s3.awschunked import AwsChunkedDecoder, ChunkSignatureVerifier, chunk_string_to_sign
from addons.s3.checksums import ChecksumVerifier, checksum_verifiers
from addons.s3.errors import S3Error, error_xml
from addons.s3.listxml import ListingError, plaintext_listing
from addons.s3.multipartxml import (
    BackendDocumentError,
    multipart_part_count,
    parse_complete_request,
    parse_parts_page,
    part_number,
    upload_id_of,
)
from addons.s3.ops import classify
from addons.s3.uploadid import UploadToken
from crypto import (
    Algorithm,
    CryptoError,
    DataKey,
    Envelope,
    RangeNotSatisfiable,
    StaticKeyring,
    parse_range,
)
from crypto.format import FrameHeader
from crypto.profiles import get_profile, metadata_budget
from tests.unit.s3_helpers import (
    ACCESS_KEY,
    NOW,
    REGION,
    SECRET_KEY,
    lookup_secret,
    sign_with_botocore,
)

FAST_EXAMPLES = 150
DEEP_EXAMPLES = 1200
ENDPOINT = "http://127.0.0.1:9000"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


def fuzz(
    strategy: st.SearchStrategy[Any], *, fast: int = FAST_EXAMPLES, deep: int = DEEP_EXAMPLES
) -> Callable[[Callable[[Any], None]], tuple[Any, Any]]:
    """Turn a property into (quick test, slow deep test)."""

    def build(check: Callable[[Any], None]) -> tuple[Any, Any]:
        quick = _settings(fast)(given(strategy)(check))
        deep_run = pytest.mark.slow(_settings(deep)(given(strategy)(check)))
        return quick, deep_run

    return build


def wire_text(data: bytes) -> str:
    """Bytes as mitmproxy hands them to addons."""
    return data.decode("utf-8", "surrogateescape")


def renders(error: S3Error) -> None:
    """Every refusal must also render as a well-formed S3 error document."""
    body = error_xml(error, resource="/b/k", request_id="0123456789ABCDEF")
    root = ElementTree.fromstring(body)
    assert root.tag == "Error"
    assert root.findtext("Code") == error.code
    assert 400 <= error.status < 600


# Texts: arbitrary unicode, arbitrary bytes seen as mitmproxy decodes them, and
# fragments of the grammar being fuzzed.
_GRAMMAR = [
    "AWS4-HMAC-SHA256",
    "AWS4-ECDSA-P256-SHA256",
    "AWS ",
    "Credential=",
    "SignedHeaders=",
    "Signature=",
    "/",
    ",",
    ";",
    "=",
    " ",
    "aws4_request",
    "s3",
    "\u00e9",
    "\udcff",
    "%",
    "%ZZ",
    "%C3%A9",
    "+",
    "&",
    "\r\n",
    "\x00",
    "9" * 30,
    "-" + "9" * 30,
    "20240506",
    "20240506T070809Z",
    ACCESS_KEY,
]
texts = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(wire_text),
    st.lists(st.sampled_from(_GRAMMAR), max_size=8).map("".join),
)


def mutate_text(data: st.DataObject, value: str) -> str:
    """One random edit of ``value``: replace, insert, delete, truncate or duplicate a slice."""
    if not value:
        return data.draw(texts)
    i = data.draw(st.integers(0, len(value)))
    j = data.draw(st.integers(i, len(value)))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "repeat"]))
    if edit == "replace":
        return value[:i] + data.draw(texts) + value[j:]
    if edit == "insert":
        return value[:i] + data.draw(texts) + value[i:]
    if edit == "delete":
        return value[:i] + value[j:]
    if edit == "truncate":
        return value[:i]
    return value[:j] + value[i:j] * data.draw(st.integers(1, 3)) + value[j:]


def mutate_bytes(data: st.DataObject, value: bytes) -> bytes:
    if not value:
        return data.draw(st.binary(max_size=40))
    i = data.draw(st.integers(0, len(value)))
    j = data.draw(st.integers(i, min(len(value), i + 64)))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "flip"]))
    if edit == "replace":
        return value[:i] + data.draw(st.binary(max_size=16)) + value[j:]
    if edit == "insert":
        return value[:i] + data.draw(st.binary(min_size=1, max_size=16)) + value[i:]
    if edit == "delete":
        return value[:i] + value[j:]
    if edit == "truncate":
        return value[:i]
    position = min(i, len(value) - 1)
    return value[:position] + bytes([value[position] ^ 0x01]) + value[position + 1 :]


# --------------------------------------------------------------------------- SigV4


def _valid_wires() -> list[Any]:
    url = f"{ENDPOINT}/bucket/some/key.txt?tagging=&x-id=PutObject"
    return [
        sign_with_botocore("PUT", url, [("Content-Type", "text/plain")], b"hello"),
        sign_with_botocore("GET", f"{ENDPOINT}/bucket/key", unsigned_payload=True),
        sign_with_botocore("GET", f"{ENDPOINT}/bucket/key?versionId=3", presign_expires=600),
    ]


VALID_WIRES = _valid_wires()


def _verify(method: str, path: str, query: str, headers: list[tuple[str, str]]) -> None:
    try:
        sigv4.verify(method, path, query, headers, NOW, lookup_secret)
    except S3Error as error:
        renders(error)
    try:  # the gateway also accepts every region; a fixed one takes other branches
        sigv4.verify(method, path, query, headers, NOW, lookup_secret, expected_region=REGION)
    except S3Error as error:
        renders(error)


def test_valid_wires_verify() -> None:
    for wire in VALID_WIRES:
        wire.verify()


@st.composite
def mutated_header_requests(draw: st.DrawFn) -> tuple[str, str, str, list[tuple[str, str]]]:
    wire = draw(st.sampled_from(VALID_WIRES[:2]))
    data = draw(st.data())
    headers = list(wire.headers)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["edit", "edit", "drop", "duplicate", "add"]))
        index = draw(st.integers(0, len(headers) - 1)) if headers else 0
        if action == "edit" and headers:
            name, value = headers[index]
            headers[index] = (name, mutate_text(data, value))
        elif action == "drop" and headers:
            headers.pop(index)
        elif action == "duplicate" and headers:
            headers.append(headers[index])
        else:
            name = draw(
                st.sampled_from(
                    ["Authorization", "x-amz-date", "Date", "x-amz-content-sha256", "Host",
                     "x-amz-meta-x", ":authority", "X-Amz-Security-Token"]
                )
            )  # fmt: skip
            headers.append((name, draw(texts)))
    path = draw(st.one_of(st.just(wire.path), texts.map(lambda t: "/" + t)))
    query = draw(st.one_of(st.just(wire.query), texts))
    return wire.method, path, query, headers


@fuzz(mutated_header_requests())
def _header_signature(request: tuple[str, str, str, list[tuple[str, str]]]) -> None:
    _verify(*request)


test_header_signature_mutations, test_header_signature_mutations_deep = _header_signature


@st.composite
def arbitrary_authorizations(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["Credential", "SignedHeaders", "Signature", "credential", ""]),
                st.sampled_from(["=", "", "=="]),
                texts,
            ),
            max_size=5,
        )
    )
    separator = draw(st.sampled_from([",", ", ", " ,", ";", ""]))
    algorithm = draw(st.one_of(st.sampled_from(["AWS4-HMAC-SHA256", "AWS", ""]), texts))
    return algorithm + " " + separator.join(name + eq + value for name, eq, value in parts)


@fuzz(st.tuples(arbitrary_authorizations(), st.sampled_from(VALID_WIRES[:2])))
@example(
    (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240506/\u00e9/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        VALID_WIRES[0],
    )
)
@example(
    (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240506/\udcff/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        VALID_WIRES[0],
    )
)
def _authorization(case: tuple[str, Any]) -> None:
    value, wire = case
    _verify(wire.method, wire.path, wire.query, wire.with_header("Authorization", value).headers)


test_arbitrary_authorization_header, test_arbitrary_authorization_header_deep = _authorization


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(part.partition("=")[::2]) for part in query.split("&")]  # type: ignore[misc]


@st.composite
def mutated_presigned_queries(draw: st.DrawFn) -> tuple[str, str, str, list[tuple[str, str]]]:
    wire = VALID_WIRES[2]
    data = draw(st.data())
    pairs = _query_pairs(wire.query)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["edit", "edit", "drop", "duplicate", "add"]))
        index = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        if action == "edit" and pairs:
            name, value = pairs[index]
            if draw(st.booleans()):
                value = mutate_text(data, value)
            else:
                name = mutate_text(data, name)
            pairs[index] = (name, value)
        elif action == "drop" and pairs:
            pairs.pop(index)
        elif action == "duplicate" and pairs:
            pairs.append(pairs[index])
        else:
            name = draw(
                st.sampled_from(
                    ["X-Amz-Expires", "X-Amz-Date", "x-amz-content-sha256", "Signature",
                     "AWSAccessKeyId", "X-Amz-Algorithm", "x-amz-signature"]
                )
            )  # fmt: skip
            pairs.append((name, draw(texts)))
    query = "&".join(f"{name}={value}" for name, value in pairs)
    headers = list(wire.headers)
    if draw(st.booleans()):
        headers.append(
            (draw(st.sampled_from(["Authorization", "x-amz-date", "Date"])), draw(texts))
        )
    return wire.method, wire.path, query, headers


@fuzz(mutated_presigned_queries())
@example(("GET", "/bucket/key", "X-Amz-Expires=" + "9" * 5000, []))
def _presigned(request: tuple[str, str, str, list[tuple[str, str]]]) -> None:
    method, path, query, headers = request
    if not headers:
        wire = VALID_WIRES[2]
        pairs = [p for p in _query_pairs(wire.query) if p[0] != "X-Amz-Expires"]
        query = "&".join(f"{n}={v}" for n, v in pairs) + "&" + query
        headers = wire.headers
    _verify(method, path, query, headers)


test_presigned_query_mutations, test_presigned_query_mutations_deep = _presigned


@fuzz(texts)
@example("Mon, 01 Jan 0001 00:00:00 +0100")
@example("Fri, 31 Dec 9999 23:59:59 -0100")
@example("99999999T999999Z")
def _dates(value: str) -> None:
    wire = VALID_WIRES[0]
    for name in ("x-amz-date", "Date"):
        headers = wire.with_header(name, value).headers
        if name == "Date":
            headers = [(n, v) for n, v in headers if n.lower() != "x-amz-date"]
        _verify(wire.method, wire.path, wire.query, headers)


test_request_dates, test_request_dates_deep = _dates


@fuzz(texts)
def _payload_hashes(value: str) -> None:
    try:
        sigv4.payload_mode_of(value)
    except S3Error as error:
        renders(error)


test_payload_hash_values, test_payload_hash_values_deep = _payload_hashes


# --------------------------------------------------------------------------- aws-chunked

AMZ_DATE = NOW.strftime("%Y%m%dT%H%M%SZ")
SCOPE = f"{AMZ_DATE[:8]}/{REGION}/s3/aws4_request"
SIGNING_KEY = sigv4.derive_signing_key(SECRET_KEY, AMZ_DATE[:8], REGION)
SEED = "a" * 64


def _signed_body(payload: bytes, chunk: int) -> bytes:
    previous = SEED
    out = b""
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    for piece in [*pieces, b""]:
        string_to_sign = chunk_string_to_sign(
            AMZ_DATE, SCOPE, previous, hashlib.sha256(piece).hexdigest()
        )
        previous = hmac.new(SIGNING_KEY, string_to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n"
    return out


def _unsigned_trailer_body(payload: bytes, chunk: int) -> bytes:
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    out = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    crc = ChecksumVerifier("crc32", None)
    crc.update(payload)
    return out + b"0\r\nx-amz-checksum-crc32:" + crc.digest_b64().encode() + b"\r\n\r\n"


PAYLOAD = os.urandom(300)
SIGNED_BODY = _signed_body(PAYLOAD, 100)
TRAILER_BODY = _unsigned_trailer_body(PAYLOAD, 128)


def _decode(body: bytes, signed: bool, splits: list[int], expected_length: int | None) -> bytes:
    signer = (
        ChunkSignatureVerifier(
            signing_key=SIGNING_KEY, amz_date=AMZ_DATE, scope=SCOPE, seed_signature=SEED
        )
        if signed
        else None
    )
    decoder = AwsChunkedDecoder(
        chunk_signer=signer,
        expected_trailers=() if signed else ("x-amz-checksum-crc32",),
        expected_length=expected_length,
        min_chunk_size=64,
    )
    out = b""
    position = 0
    for cut in [*sorted(splits), len(body)]:
        cut = min(cut, len(body))
        if cut > position:
            out += b"".join(decoder.feed(body[position:cut]))
            position = cut
    decoder.finish()
    return out


def test_valid_aws_chunked_bodies_decode() -> None:
    assert _decode(SIGNED_BODY, True, [1, 50, 200], len(PAYLOAD)) == PAYLOAD
    assert _decode(TRAILER_BODY, False, [7], len(PAYLOAD)) == PAYLOAD


@st.composite
def chunked_cases(draw: st.DrawFn) -> tuple[bytes, bool, list[int], int | None]:
    signed = draw(st.booleans())
    body = SIGNED_BODY if signed else TRAILER_BODY
    data = draw(st.data())
    mode = draw(st.sampled_from(["mutate", "mutate", "random", "grammar"]))
    if mode == "mutate":
        for _ in range(draw(st.integers(1, 3))):
            body = mutate_bytes(data, body)
    elif mode == "random":
        body = draw(st.binary(max_size=400))
    else:
        body = b"".join(
            draw(
                st.lists(
                    st.sampled_from(
                        [b"0", b"ffffffffffffffff", b"10000000000000000", b"1", b"40",
                         b";chunk-signature=", b"a" * 64, b"\r\n", b"\n", b"\r", b"x" * 64,
                         b"x-amz-checksum-crc32:", b"AAAAAA==", b"x-amz-trailer-signature:",
                         b":", b"\xff", b" "]
                    ),
                    max_size=20,
                )
            )
        )  # fmt: skip
    splits = draw(st.lists(st.integers(0, len(body)), max_size=4))
    expected = draw(st.sampled_from([None, len(PAYLOAD), 0, 2**63]))
    return body, signed, splits, expected


@fuzz(chunked_cases())
def _chunked(case: tuple[bytes, bool, list[int], int | None]) -> None:
    body, signed, splits, expected = case
    try:
        decoded = _decode(body, signed, splits, expected)
    except S3Error as error:
        renders(error)
        return
    if expected is not None:
        assert len(decoded) == expected


test_aws_chunked_bodies, test_aws_chunked_bodies_deep = _chunked


# --------------------------------------------------------------------------- XML bodies

COMPLETE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b'<Part><PartNumber>1</PartNumber><ETag>"a54357aff0632cce46d942af68356b38"</ETag></Part>'
    b"<Part><PartNumber>2</PartNumber><ETag>etag2</ETag>"
    b"<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
    b"</CompleteMultipartUpload>"
)
DELETE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
    b"<Object><Key>a</Key></Object><Object><Key>b&amp;c</Key><VersionId>1</VersionId></Object>"
    b"</Delete>"
)
PARTS_PAGE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult><UploadId>u</UploadId>'
    b"<IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>"
    b"<Part><PartNumber>1</PartNumber><ETag>&quot;e&quot;</ETag><Size>5242928</Size></Part>"
    b"<Part><PartNumber>2</PartNumber><ETag>e2</ETag><Size>100</Size></Part></ListPartsResult>"
)
LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>b</Name>'
    b"<Contents><Key>k</Key><ETag>&quot;e&quot;</ETag><Size>1000</Size></Contents>"
    b"<Contents><Key>m</Key><ETag>&quot;e-2&quot;</ETag><Size>5243000</Size></Contents>"
    b"</ListBucketResult>"
)
ATTRIBUTES = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<GetObjectAttributesResponse><ETag>e-2</ETag>'
    b"<Checksum><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Checksum><ObjectParts>"
    b"<Part><PartNumber>1</PartNumber><ChecksumSHA1>x</ChecksumSHA1><Size>5243008</Size></Part>"
    b"<Part><PartNumber>2</PartNumber><Size>65</Size></Part></ObjectParts>"
    b"<ObjectSize>5243073</ObjectSize></GetObjectAttributesResponse>"
)
_XML_GRAMMAR = [
    b"<", b">", b"</", b"/>", b"<Part>", b"</Part>", b"<PartNumber>", b"</PartNumber>",
    b"<ETag>", b"</ETag>", b"<Object>", b"<Key>", b"</Key>", b"</Object>", b"<Delete>",
    b"</Delete>", b"<CompleteMultipartUpload>", b"</CompleteMultipartUpload>", b"1", b"0",
    b"99999999999999999999", b"-1", b"&amp;", b"&#0;", b"&#x110000;", b"&bogus;",
    b"<!DOCTYPE a [<!ENTITY e 'x'>]>", b"<![CDATA[x]]>", b"<?pi x?>", b"<!-- c -->",
    b'<?xml version="1.0" encoding="x-bogus"?>', b'<?xml version="1.0" encoding="utf-16"?>',
    b"\xff\xfe", b"\x00", b" xmlns='urn:x'", b"\xc3\xa9",
]  # fmt: skip


@st.composite
def xml_documents(draw: st.DrawFn, seed: bytes) -> bytes:
    mode = draw(st.sampled_from(["mutate", "mutate", "random", "grammar"]))
    if mode == "random":
        return draw(st.binary(max_size=300))
    if mode == "grammar":
        return b"".join(draw(st.lists(st.sampled_from(_XML_GRAMMAR), max_size=25)))
    data = draw(st.data())
    document = seed
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            i = draw(st.integers(0, len(document)))
            document = document[:i] + draw(st.sampled_from(_XML_GRAMMAR)) + document[i:]
        else:
            document = mutate_bytes(data, document)
    return document


@fuzz(xml_documents(COMPLETE))
@example(b'<?xml version="1.0" encoding="x-bogus"?><CompleteMultipartUpload/>')
def _complete(document: bytes) -> None:
    try:
        parts = parse_complete_request(document)
    except S3Error as error:
        renders(error)
        return
    assert parts and all(1 <= part.number <= 10_000 for part in parts)


test_complete_multipart_upload_xml, test_complete_multipart_upload_xml_deep = _complete


@fuzz(xml_documents(DELETE))
@example(b'<?xml version="1.0" encoding="x-bogus"?><Delete/>')
@example(b"<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><Delete>&b;</Delete>")
def _delete(document: bytes) -> None:
    try:
        assert delete_objects_key_count(document) >= 0
    except S3Error as error:
        renders(error)


test_delete_objects_xml, test_delete_objects_xml_deep = _delete


@fuzz(xml_documents(PARTS_PAGE))
def _backend_multipart(document: bytes) -> None:
    for parse in (parse_parts_page, upload_id_of):
        with contextlib.suppress(BackendDocumentError):
            parse(document)


test_backend_multipart_documents, test_backend_multipart_documents_deep = _backend_multipart


@fuzz(xml_documents(ATTRIBUTES))
def _attributes(document: bytes) -> None:
    with contextlib.suppress(BackendDocumentError):
        read_attributes(document)
        rewritten = plaintext_attributes(document, 5242929, 65536, drop_etag=True)
        assert read_attributes(rewritten).etag is None


test_backend_attributes_documents, test_backend_attributes_documents_deep = _attributes


@fuzz(xml_documents(LISTING))
def _listing(document: bytes) -> None:
    with contextlib.suppress(ListingError):
        plaintext_listing(document, 65536)


test_backend_listings, test_backend_listings_deep = _listing


# --------------------------------------------------------------------------- Range


@fuzz(
    st.one_of(
        texts, st.from_regex(r"\s*bytes\s*=\s*[0-9]{0,30}\s*-\s*[0-9]{0,30}\s*", fullmatch=True)
    )
)
@example("bytes=" + "9" * 5000 + "-")
@example("bytes=-" + "0" * 5000 + "1")
def _ranges(value: str) -> None:
    requested = parse_range(value)
    if requested is None:
        return
    for size in (0, 1, 65536, 2**40):
        try:
            first, last = requested.resolve(size)
        except RangeNotSatisfiable:
            continue
        assert 0 <= first <= last < size


test_range_headers, test_range_headers_deep = _ranges


# --------------------------------------------------------------------------- metadata and envelopes

KEYRING = StaticKeyring({"k1": bytes(range(32)), "k0": bytes(range(1, 33))}, "k1")
_KEY = DataKey(bytes(range(32)))
_FRAME = FrameHeader(Algorithm.AES_256_GCM, 16, 0, bytes(16), 5, bytes(32))
ENVELOPES = [
    Envelope.seal(_KEY, KEYRING, frame=_FRAME).encode(),
    Envelope.seal(_KEY, KEYRING, multipart=True).encode(),
]


@fuzz(st.tuples(st.sampled_from(ENVELOPES), st.data()))
def _envelopes(case: tuple[str, st.DataObject]) -> None:
    text, data = case
    for _ in range(data.draw(st.integers(1, 3))):
        text = mutate_text(data, text)
    try:
        envelope = Envelope.decode(text)
    except CryptoError:
        return
    with contextlib.suppress(CryptoError):
        envelope.open(KEYRING).close()


test_envelope_values, test_envelope_values_deep = _envelopes


@fuzz(st.lists(st.tuples(texts.map(lambda t: "x-amz-meta-" + t), texts), max_size=6))
def _metadata(headers: list[tuple[str, str]]) -> None:
    for name in ("generic", "aws"):
        budget = metadata_budget(get_profile(name), headers)
        assert budget.used >= 0
    fields = [
        (n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
        for n, v in headers
    ]
    assert (
        user_metadata_bytes(http.Headers(fields))
        == metadata_budget(get_profile("generic"), headers).used
    )


test_metadata_budget, test_metadata_budget_deep = _metadata


# --------------------------------------------------------------------------- upload ids

_TOKEN = UploadToken.seal(
    DataKey(bytes(range(32))), KEYRING, bucket="b", key="k", backend_upload_id="backend-id"
).encode()


@fuzz(st.one_of(texts.map(lambda t: "s3gw1." + t), texts, st.tuples(st.just(_TOKEN), st.data())))
@example(
    "s3gw1." + base64.urlsafe_b64encode(b"\x01\x10\x00\x00\x1c" + bytes(28)).decode().rstrip("=")
)
def _upload_ids(value: Any) -> None:
    if isinstance(value, tuple):
        text, data = value
        value = mutate_text(data, text)
    try:
        token = UploadToken.decode(value)
    except CryptoError:
        return
    with contextlib.suppress(CryptoError):
        token.open(KEYRING, bucket="b", key="k").close()


test_upload_id_tokens, test_upload_id_tokens_deep = _upload_ids


@fuzz(st.one_of(texts, st.integers(-(10**30), 10**30).map(str)))
def _part_numbers(value: str) -> None:
    try:
        assert 1 <= part_number(value) <= 10_000
    except S3Error as error:
        renders(error)
    count = multipart_part_count(value)
    assert count is None or 1 <= count <= 10_000


test_part_numbers, test_part_numbers_deep = _part_numbers


# --------------------------------------------------------------------------- checksums

_CHECKSUM_NAMES = [
    "content-md5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-checksum-md5", "x-amz-checksum-",
    "Content-MD5", "X-Amz-Checksum-CRC32",
]  # fmt: skip


@fuzz(
    st.tuples(
        st.lists(st.tuples(st.sampled_from(_CHECKSUM_NAMES), texts), max_size=3),
        st.lists(st.one_of(st.sampled_from(_CHECKSUM_NAMES), texts), max_size=2),
        st.one_of(
            texts, st.binary(min_size=4, max_size=32).map(lambda b: base64.b64encode(b).decode())
        ),
    )
)
def _checksums(case: tuple[list[tuple[str, str]], list[str], str]) -> None:
    headers, trailers, trailer_value = case
    try:
        verifiers = checksum_verifiers(headers, trailer_names=trailers)
        for verifier in verifiers:
            verifier.update(b"body")
            if verifier.expected_b64 is None:
                verifier.set_expected(trailer_value)
            verifier.verify()
    except S3Error as error:
        renders(error)


test_checksum_headers, test_checksum_headers_deep = _checksums


# --------------------------------------------------------------------------- operations


@fuzz(
    st.tuples(
        st.sampled_from(["GET", "PUT", "POST", "HEAD", "DELETE", "PATCH", "get"]),
        texts.map(lambda t: "/" + t),
        st.one_of(st.just(""), texts.map(lambda t: "?" + t)),
        texts,
    )
)
def _operations(case: tuple[str, str, str, str]) -> None:
    method, path, query, host = case
    for base_domain in (None, "s3.example.com"):
        classify(method, path + query, {}, host, base_domain)


test_operation_classifier, test_operation_classifier_deep = _operations


def test_presign_expiry_beyond_int_digit_limit_is_refused() -> None:
    wire = VALID_WIRES[2]
    pairs = [(n, "9" * 5000 if n == "X-Amz-Expires" else v) for n, v in _query_pairs(wire.query)]
    query = "&".join(f"{n}={v}" for n, v in pairs)
    with pytest.raises(S3Error) as caught:
        sigv4.verify(wire.method, wire.path, query, wire.headers, NOW, lookup_secret)
    assert caught.value.code == "AuthorizationQueryParametersError"


def test_non_ascii_credential_region_is_a_signature_mismatch() -> None:
    wire = VALID_WIRES[0]
    authorization = wire.header("Authorization").replace(f"/{REGION}/", "/\u00e9\udcff/")
    with pytest.raises(S3Error) as caught:
        sigv4.verify(
            wire.method,
            wire.path,
            wire.query,
            wire.with_header("Authorization", authorization).headers,
            NOW,
            lookup_secret,
        )
    assert caught.value.code == "SignatureDoesNotMatch"
    renders(caught.value)


def test_http_date_out_of_range_after_zone_is_access_denied() -> None:
    wire = VALID_WIRES[0]
    headers = [(n, v) for n, v in wire.headers if n.lower() != "x-amz-date"]
    headers.append(("Date", "Fri, 31 Dec 9999 23:59:59 -0100"))
    with pytest.raises(S3Error) as caught:
        sigv4.verify(wire.method, wire.path, wire.query, headers, NOW + timedelta(0), lookup_secret)
    assert caught.value.code in ("AccessDenied", "SignatureDoesNotMatch")


# --------------------------------------------------------------------------- upload lengths


@fuzz(st.one_of(texts, st.sampled_from(["\u00b2", "\uff11", "9" * 5000, "0" * 30 + "1", "-1"])))
def _lengths(value: str) -> None:
    try:
        assert _length(value, "x-amz-decoded-content-length") >= 0
    except S3Error as error:
        renders(error)


test_upload_length_headers, test_upload_length_headers_deep = _lengths

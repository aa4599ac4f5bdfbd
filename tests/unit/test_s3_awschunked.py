"""aws-chunked decoding: botocore's encoder, AWS's documented examples, tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import zlib
from collections.abc import Sequence

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.s3 import sigv4
from addons.s3.awschunked import (
    AwsChunkedDecoder,
    ChunkSignatureVerifier,
    canonical_trailers,
    trailer_string_to_sign,
)
from addons.s3.checksums import ChecksumVerifier
from addons.s3.errors import S3Error
from tests.unit.s3_helpers import DOC_DATE, DOC_SECRET, doc_authorization, doc_verify

# --- Helpers ------------------------------------------------------------------------

DOC_CREDENTIAL_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_SIGNING_KEY = sigv4.derive_signing_key(DOC_SECRET, "20130524", "us-east-1")


def split_at(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(body)) for cut in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


def decode(decoder: AwsChunkedDecoder, pieces: Sequence[bytes]) -> bytes:
    out = []
    for piece in pieces:
        decoded = decoder.feed(piece)
        assert all(decoded), "the decoder must never hand out empty pieces"
        out.extend(decoded)
    decoder.finish()
    assert decoder.complete
    return b"".join(out)


def failure(decoder: AwsChunkedDecoder, pieces: Sequence[bytes]) -> S3Error:
    with pytest.raises(S3Error) as caught:
        for piece in pieces:
            decoder.feed(piece)
        decoder.finish()
    # The error sticks: nothing more is accepted.
    with pytest.raises(S3Error):
        decoder.feed(b"0\r\n\r\n")
    with pytest.raises(S3Error):
        decoder.finish()
    return caught.value


def unsigned(expected_trailers: Sequence[str] = (), **options: int) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(
        chunk_signer=None, expected_trailers=expected_trailers, min_chunk_size=0, **options
    )


def hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode_signed(
    data: bytes,
    sizes: Sequence[int],
    *,
    seed: str,
    trailers: dict[str, str] | None = None,
    key: bytes = DOC_SIGNING_KEY,
) -> bytes:
    """An independent encoder of signed chunks, written from AWS's description."""
    empty = hashlib.sha256(b"").hexdigest()
    previous, out, offset = seed, [], 0
    chunks = []
    for size in sizes:
        chunks.append(data[offset : offset + size])
        offset += size
    chunks.append(b"")
    for chunk in chunks:
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                DOC_DATE,
                DOC_CREDENTIAL_SCOPE,
                previous,
                empty,
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        previous = hmac_hex(key, string_to_sign)
        out.append(f"{len(chunk):x};chunk-signature={previous}\r\n".encode())
        if chunk:
            out.append(chunk + b"\r\n")
    if trailers is None:
        out.append(b"\r\n")
    else:
        lines = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                DOC_DATE,
                DOC_CREDENTIAL_SCOPE,
                previous,
                hashlib.sha256(lines.encode()).hexdigest(),
            ]
        )
        for name, value in trailers.items():
            out.append(f"{name}:{value}\r\n".encode())
        out.append(f"x-amz-trailer-signature:{hmac_hex(key, string_to_sign)}\r\n\r\n".encode())
    return b"".join(out)


def signer(seed: str, *, trailer_signed: bool = False) -> ChunkSignatureVerifier:
    return ChunkSignatureVerifier(
        signing_key=DOC_SIGNING_KEY,
        amz_date=DOC_DATE,
        scope=DOC_CREDENTIAL_SCOPE,
        seed_signature=seed,
        trailer_signed=trailer_signed,
    )


def botocore_body(data: bytes, chunk_size: int, checksum: type = Crc32Checksum) -> bytes:
    name = "x-amz-checksum-crc32" if checksum is Crc32Checksum else "x-amz-checksum-sha256"
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=checksum, checksum_name=name, chunk_size=chunk_size
    )
    return bytes(wrapper.read())


# --- botocore's AwsChunkedWrapper ----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    chunk_size=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_botocore_crc32_trailer_body_in_any_split(
    data: bytes, chunk_size: int, cuts: list[int]
) -> None:
    body = botocore_body(data, chunk_size)
    decoder = unsigned(["x-amz-checksum-crc32"], expected_length=len(data))
    assert decode(decoder, split_at(body, cuts)) == data
    assert decoder.decoded_length == len(data)
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert decoder.trailers == {"x-amz-checksum-crc32": expected}
    verifier = ChecksumVerifier("crc32", None)
    verifier.update(data)
    verifier.set_expected(decoder.trailers["x-amz-checksum-crc32"])
    verifier.verify()


def test_botocore_sha256_trailer_byte_by_byte() -> None:
    data = bytes(range(256)) * 40
    body = botocore_body(data, 8192, Sha256Checksum)
    decoder = AwsChunkedDecoder(chunk_signer=None, expected_trailers=["X-Amz-Checksum-Sha256"])
    assert decode(decoder, [body[i : i + 1] for i in range(len(body))]) == data
    assert (
        decoder.trailers["x-amz-checksum-sha256"]
        == base64.b64encode(hashlib.sha256(data).digest()).decode()
    )


def test_empty_object() -> None:
    body = botocore_body(b"", 1024)
    assert body.startswith(b"0\r\n")
    decoder = unsigned(["x-amz-checksum-crc32"], expected_length=0)
    assert decode(decoder, [body]) == b""


def test_no_trailers_at_all() -> None:
    assert decode(unsigned(), [b"3\r\nabc\r\n", b"0\r\n\r\n"]) == b"abc"
    assert decode(unsigned(), [b"A\r\n0123456789\r\n0\r\n\r\n"]) == b"0123456789"


def test_data_leaves_before_the_chunk_ends() -> None:
    decoder = unsigned()
    assert decoder.feed(b"100000\r\n") == []
    piece = b"x" * 0x10000
    for count in range(1, 17):
        out = decoder.feed(piece)
        assert out == [piece]
        assert out[0] is piece  # whole inputs inside a chunk are passed on uncopied
        assert decoder.decoded_length == count * 0x10000
    assert decoder.feed(b"\r\n0\r\n\r\n") == []
    decoder.finish()


# --- Signed chunks: AWS's documented examples ---------------------------------------

DOC_CHUNKS = [
    (0x10000, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (0x400, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]
DOC_TRAILER_CHUNKS = [
    (0x10000, "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"),
    (0x400, "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"),
    (0, "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"),
]
DOC_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def doc_body(chunks: list[tuple[int, str]], *, final: bytes = b"\r\n") -> bytes:
    out = []
    for size, signature in chunks:
        out.append(f"{size:x};chunk-signature={signature}\r\n".encode())
        if size:
            out.append(b"a" * size + b"\r\n")
    out.append(final)
    return b"".join(out)


def doc_streaming_auth() -> sigv4.AuthContext:
    signed = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class"
    )
    return doc_verify(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [
            ("Host", "s3.amazonaws.com"),
            ("x-amz-date", DOC_DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("Content-Length", "66824"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            doc_authorization(
                signed, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
            ),
        ],
    )


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 67000), max_size=8))
def test_aws_documented_signed_chunks(cuts: list[int]) -> None:
    body = doc_body(DOC_CHUNKS)
    assert len(body) == 66824  # the Content-Length of the example
    chunk_signer = ChunkSignatureVerifier.from_auth(doc_streaming_auth())
    decoder = AwsChunkedDecoder(chunk_signer=chunk_signer, expected_length=66560)
    assert decode(decoder, split_at(body, cuts)) == b"a" * 66560
    assert chunk_signer.previous_signature == DOC_CHUNKS[-1][1]


def test_aws_documented_signed_chunks_with_trailer() -> None:
    seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    trailer = f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}"
    body = doc_body(DOC_TRAILER_CHUNKS, final=trailer.encode() + b"\r\n\r\n")
    decoder = AwsChunkedDecoder(
        chunk_signer=signer(seed, trailer_signed=True),
        expected_trailers=["x-amz-checksum-crc32c"],
    )
    assert decode(decoder, split_at(body, range(0, len(body), 1000))) == b"a" * 66560
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    verifier = ChecksumVerifier("crc32c", "sOO8/Q==")
    verifier.update(b"a" * 66560)
    verifier.verify()


def test_trailer_framing_of_the_aws_example_is_tolerated() -> None:
    # An empty line between the last chunk and the trailers, with or without
    # the empty line that closes them.
    seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    trailer = (
        f"\r\nx-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}"
    )
    for ending in (b"\r\n", b"\r\n\r\n"):
        body = doc_body(DOC_TRAILER_CHUNKS, final=trailer.encode() + ending)
        decoder = AwsChunkedDecoder(
            chunk_signer=signer(seed, trailer_signed=True),
            expected_trailers=["x-amz-checksum-crc32c"],
        )
        assert decode(decoder, [body]) == b"a" * 66560


def test_trailer_signature_vector() -> None:
    # The trailer example of the S3 documentation as quoted in MinIO's tests.
    previous = "e05ab64fe1dfdbf0b5870abbaabdb063c371d4e96f2767e6934d90529c5ae850"
    canonical = canonical_trailers({"X-Amz-Checksum-Crc32c": " wdBDMA== "})
    assert canonical == b"x-amz-checksum-crc32c:wdBDMA==\n"
    assert trailer_string_to_sign(DOC_DATE, DOC_CREDENTIAL_SCOPE, previous, "h").startswith(
        "AWS4-HMAC-SHA256-TRAILER\n20130524T000000Z\n"
    )
    chain = signer(previous, trailer_signed=True)
    chain.verify_trailer(
        canonical, "41e14ac611e27a8bb3d66c3bad6856f209297767d5dd4fc87d8fa9e422e03faf"
    )


def test_tampered_chunk_is_caught_when_the_chunk_ends() -> None:
    body = bytearray(doc_body(DOC_CHUNKS))
    at = body.index(b"a" * 10) + 5000
    body[at] = ord("b")
    chunk_signer = ChunkSignatureVerifier.from_auth(doc_streaming_auth())
    decoder = AwsChunkedDecoder(chunk_signer=chunk_signer)
    first_half = decoder.feed(bytes(body[:40000]))
    assert sum(map(len, first_half)) > 0  # released before the signature is known
    err = failure(decoder, [bytes(body[40000:])])
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)
    assert err.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-PAYLOAD\n20130524T000000Z\n")
    assert err.extra["SignatureProvided"] == DOC_CHUNKS[0][1]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tampered_chunk_signature(index: int) -> None:
    chunks = list(DOC_CHUNKS)
    size, signature = chunks[index]
    chunks[index] = (size, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    decoder = AwsChunkedDecoder(chunk_signer=ChunkSignatureVerifier.from_auth(doc_streaming_auth()))
    assert failure(decoder, [doc_body(chunks)]).code == "SignatureDoesNotMatch"


def test_reordered_chunks_break_the_chain() -> None:
    data = bytes(range(200)) * 100
    seed = "ab" * 32
    body = encode_signed(data, [10000, 10000], seed=seed)
    assert decode(AwsChunkedDecoder(chunk_signer=signer(seed)), [body]) == data
    first_end = body.index(b"\r\n") + 2 + 10000 + 2
    second_end = body.index(b"\r\n", first_end) + 2 + 10000 + 2
    first, second, final = body[:first_end], body[first_end:second_end], body[second_end:]
    decoder = AwsChunkedDecoder(chunk_signer=signer(seed))
    assert failure(decoder, [second + first + final]).code == "SignatureDoesNotMatch"


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=2000),
    sizes=st.lists(st.integers(1, 600), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    with_trailer=st.booleans(),
)
def test_independently_encoded_signed_chunks(
    data: bytes, sizes: list[int], cuts: list[int], with_trailer: bool
) -> None:
    seed = hashlib.sha256(data).hexdigest()
    parts, total = [], 0
    for size in sizes:
        if total < len(data):
            parts.append(min(size, len(data) - total))
            total += parts[-1]
    if total < len(data):
        parts.append(len(data) - total)
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if with_trailer else None
    body = encode_signed(data, parts, seed=seed, trailers=trailers)
    decoder = AwsChunkedDecoder(
        chunk_signer=signer(seed, trailer_signed=with_trailer),
        expected_trailers=list(trailers or ()),
        min_chunk_size=0,
    )
    assert decode(decoder, split_at(body, cuts)) == data
    assert decoder.trailers == (trailers or {})


def test_tampered_trailer() -> None:
    seed = "cd" * 32
    body = encode_signed(
        b"x" * 100, [100], seed=seed, trailers={"x-amz-checksum-crc32": "AAAAAA=="}
    )
    tampered = body.replace(b"AAAAAA==", b"BBBBBB==")
    decoder = AwsChunkedDecoder(
        chunk_signer=signer(seed, trailer_signed=True), expected_trailers=["x-amz-checksum-crc32"]
    )
    err = failure(decoder, [tampered])
    assert err.code == "SignatureDoesNotMatch"
    assert err.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-TRAILER\n")


def test_trailer_signature_that_is_not_hex() -> None:
    seed = "cd" * 32
    body = encode_signed(
        b"x" * 100, [100], seed=seed, trailers={"x-amz-checksum-crc32": "AAAAAA=="}
    )
    signature_at = body.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
    garbled = body[:signature_at] + "ü\udcff".encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    decoder = AwsChunkedDecoder(
        chunk_signer=signer(seed, trailer_signed=True), expected_trailers=["x-amz-checksum-crc32"]
    )
    assert failure(decoder, [garbled]).code == "SignatureDoesNotMatch"


def test_missing_trailer_signature() -> None:
    seed = "cd" * 32
    body = encode_signed(
        b"x" * 100, [100], seed=seed, trailers={"x-amz-checksum-crc32": "AAAAAA=="}
    )
    without = body.split(b"x-amz-trailer-signature")[0] + b"\r\n"
    decoder = AwsChunkedDecoder(
        chunk_signer=signer(seed, trailer_signed=True), expected_trailers=["x-amz-checksum-crc32"]
    )
    assert failure(decoder, [without]).code == "MalformedTrailerError"


def test_signature_presence_must_match_the_mode() -> None:
    seed = "ef" * 32
    signed_body = encode_signed(b"abc", [3], seed=seed)
    assert failure(unsigned(), [signed_body]).code == "IncompleteBody"
    decoder = AwsChunkedDecoder(chunk_signer=signer(seed), min_chunk_size=0)
    assert failure(decoder, [b"3\r\nabc\r\n0\r\n\r\n"]).code == "IncompleteBody"


def test_verifier_refuses_modes_without_chunk_signatures() -> None:
    auth = doc_verify(
        "GET",
        "/test.txt",
        [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", DOC_DATE),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
            doc_authorization(
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ],
    )
    with pytest.raises(ValueError, match="no chunk signatures"):
        ChunkSignatureVerifier.from_auth(auth)


# --- Malformed bodies ----------------------------------------------------------------

GOOD = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n"
CRC = ["x-amz-checksum-crc32"]


@pytest.mark.parametrize("length", [n for n in range(len(GOOD)) if n != len(GOOD) - 2])
def test_every_truncation_is_an_incomplete_body(length: int) -> None:
    err = failure(unsigned(CRC), [GOOD[:length]])
    assert (err.code, err.status, err.message) == (
        "IncompleteBody",
        400,
        "The request body terminated unexpectedly",
    )


def test_only_the_closing_empty_line_may_be_missing() -> None:
    assert decode(unsigned(CRC), [GOOD[:-2]]) == b"hello"


@pytest.mark.parametrize(
    "body",
    [
        GOOD + b"x",
        GOOD + GOOD,
        b"5\r\nhello\r\n0\r\n\r\n",  # the declared trailer is missing
    ],
)
def test_garbage_or_missing_parts_after_the_end(body: bytes) -> None:
    err = failure(unsigned(CRC), [body])
    assert err.code in ("IncompleteBody", "MalformedTrailerError")


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5;chunk-signature=abc\r\nhello\r\n0\r\n\r\n",
        b"5;foo=bar\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"\r\n",
        b"-1\r\n",
        b"11111111111111111\r\n",
    ],
)
def test_malformed_framing(body: bytes) -> None:
    assert failure(unsigned(), [body]).code == "IncompleteBody"


def test_overlong_chunk_header_is_refused_early() -> None:
    decoder = unsigned(max_chunk_header=64)
    assert failure(decoder, [b"5" * 10, b"5" * 100]).code == "IncompleteBody"


@pytest.mark.parametrize(
    ("trailer_section", "declared"),
    [
        (b"x-amz-checksum-crc32c:AAAAAA==\r\n\r\n", CRC),
        (b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", CRC),
        (b"no-colon-here\r\n\r\n", CRC),
        (b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n", []),
        (b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n", []),
        (b"x-amz-checksum-crc32:" + b"A" * 20000 + b"\r\n\r\n", CRC),
    ],
)
def test_malformed_trailers(trailer_section: bytes, declared: list[str]) -> None:
    decoder = unsigned(declared, max_chunk_header=32768)
    err = failure(decoder, [b"5\r\nhello\r\n0\r\n" + trailer_section])
    assert (err.code, err.status) == ("MalformedTrailerError", 400)


def test_trailer_whitespace_and_case() -> None:
    decoder = unsigned(CRC)
    assert decode(decoder, [b"0\r\nX-Amz-Checksum-CRC32 :  AAAAAA== \r\n\r\n"]) == b""
    assert decoder.trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


def test_small_chunks_only_at_the_end() -> None:
    body = b"2000\r\n" + b"a" * 0x2000 + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    decoder = AwsChunkedDecoder(chunk_signer=None)
    assert len(decode(decoder, [body])) == 0x2000 + 5
    small_first = b"1fff\r\n" + b"a" * 0x1FFF + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    err = failure(AwsChunkedDecoder(chunk_signer=None), [small_first])
    assert (err.code, err.status) == ("InvalidChunkSizeError", 403)
    assert err.extra == {"Chunk": "1", "BadChunkSize": "8191"}


def test_decoded_length_must_match() -> None:
    assert failure(unsigned(expected_length=4), [b"5\r\nhello"]).code == "IncompleteBody"
    assert failure(unsigned(expected_length=6), [b"5\r\nhello\r\n0\r\n\r\n"]).code == (
        "IncompleteBody"
    )
    assert decode(unsigned(expected_length=5), [b"5\r\nhello\r\n0\r\n\r\n"]) == b"hello"


def test_feeding_nothing() -> None:
    decoder = unsigned()
    assert decoder.feed(b"") == []
    assert not decoder.complete
    assert failure(decoder, []).code == "IncompleteBody"

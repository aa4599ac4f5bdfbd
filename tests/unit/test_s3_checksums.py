"""Flexible checksums and Content-MD5, against botocore's own checksum classes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.s3 import checksums
from addons.s3.checksums import ChecksumVerifier, checksum_headers_in, checksum_verifiers
from addons.s3.errors import S3Error

CHECK_INPUT = b"123456789"
# The standard check values of each algorithm (the CRC catalogue's "check").
CHECK_VALUES = {
    "crc32": "cbf43926",
    "crc32c": "e3069283",
    "crc64nvme": "ae8b14860a799888",
    "sha1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "sha256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
    "md5": "25f9e794323b453885f5181f1b624d0b",
}


def b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


@pytest.mark.parametrize(("algorithm", "check"), CHECK_VALUES.items())
def test_check_values(algorithm: str, check: str) -> None:
    whole = ChecksumVerifier(algorithm, b64(check))
    whole.update(CHECK_INPUT)
    assert whole.digest().hex() == check
    whole.verify()
    pieces = ChecksumVerifier(algorithm, None)
    for piece in (b"1234", b"", memoryview(b"567"), bytearray(b"89")):
        pieces.update(piece)
    assert pieces.digest_b64() == b64(check)


def test_documented_crc32c_of_the_streaming_example() -> None:
    # 66560 bytes of "a", the trailer value in AWS's streaming trailer example.
    verifier = ChecksumVerifier("x-amz-checksum-crc32c", "sOO8/Q==")
    verifier.update(b"a" * 66560)
    verifier.verify()


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=2000), cut=st.integers(0, 2000))
def test_same_as_botocore(data: bytes, cut: int) -> None:
    for algorithm, reference in (
        ("crc32", Crc32Checksum),
        ("sha1", Sha1Checksum),
        ("sha256", Sha256Checksum),
    ):
        ours = ChecksumVerifier(algorithm, None)
        ours.update(data[:cut])
        ours.update(data[cut:])
        theirs = reference()
        theirs.update(data)
        assert ours.digest_b64() == theirs.b64digest()


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=100), cut=st.integers(0, 100))
def test_table_crcs_are_the_bitwise_definitions(data: bytes, cut: int) -> None:
    def bitwise(poly: int, width: int) -> bytes:
        mask = (1 << width) - 1
        crc = mask
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        return (crc ^ mask).to_bytes(width // 8, "big")

    for algorithm, poly, width in (
        ("crc32c", 0x82F63B78, 32),
        ("crc64nvme", 0x9A6C9329AC4BC9B5, 64),
    ):
        verifier = ChecksumVerifier(algorithm, None)
        verifier.update(data[:cut])
        verifier.update(data[cut:])
        assert verifier.digest() == bitwise(poly, width)


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"])
def test_flexible_checksum_mismatch(algorithm: str) -> None:
    wrong = base64.b64encode(b"\x01" * (len(bytes.fromhex(CHECK_VALUES[algorithm])))).decode()
    verifier = ChecksumVerifier(algorithm.upper(), wrong)
    verifier.update(CHECK_INPUT)
    with pytest.raises(S3Error) as caught:
        verifier.verify()
    assert (caught.value.code, caught.value.status) == ("BadDigest", 400)
    assert caught.value.message == (
        f"The {algorithm.upper()} you specified did not match the calculated checksum."
    )


def test_content_md5_mismatch_reports_both_digests() -> None:
    expected = hashlib.md5(b"other").digest()
    verifier = ChecksumVerifier("Content-MD5", base64.b64encode(expected).decode())
    verifier.update(CHECK_INPUT)
    with pytest.raises(S3Error) as caught:
        verifier.verify()
    err = caught.value
    assert (err.code, err.message) == (
        "BadDigest",
        "The Content-MD5 you specified did not match what we received.",
    )
    assert err.extra == {
        "ExpectedDigest": expected.hex(),
        "CalculatedDigest": b64(CHECK_VALUES["md5"]),
    }


@pytest.mark.parametrize(
    "value",
    ["not base64!", "YWJyYWNhZGFicmE=", CHECK_VALUES["md5"], "", b64(CHECK_VALUES["md5"])[:-2]],
)
def test_invalid_content_md5(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        ChecksumVerifier("content-md5", value)
    assert (caught.value.code, caught.value.status) == ("InvalidDigest", 400)
    assert caught.value.message == "The Content-MD5 you specified was invalid."
    assert caught.value.extra == {"Content-MD5": value}


@pytest.mark.parametrize("value", ["y/Q5Jg", "cbf43926", "y/Q5Jg==y/Q5Jg==", "AAAAAAAA", "ÿÿÿÿ"])
def test_invalid_flexible_checksum_values(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        ChecksumVerifier("crc32", value)
    assert (caught.value.code, caught.value.message) == (
        "InvalidRequest",
        "Value for x-amz-checksum-crc32 header is invalid.",
    )
    verifier = ChecksumVerifier("crc32", None)
    with pytest.raises(S3Error) as caught:
        verifier.set_expected(value)
    assert caught.value.message == "Value for x-amz-checksum-crc32 trailing header is invalid."


def test_trailer_value_set_late() -> None:
    verifier = ChecksumVerifier("x-amz-checksum-crc32", None)
    verifier.update(CHECK_INPUT)
    with pytest.raises(ValueError, match="no expected value"):
        verifier.verify()
    verifier.set_expected(" y/Q5Jg== ")
    assert verifier.expected_b64 == "y/Q5Jg=="
    verifier.verify()


def test_unknown_algorithm() -> None:
    with pytest.raises(S3Error) as caught:
        ChecksumVerifier("md4", None)
    assert caught.value.code == "InvalidRequest"
    assert caught.value.message.startswith("Checksum algorithm provided is unsupported.")


def test_header_names() -> None:
    assert ChecksumVerifier("SHA256", None).header_name == "x-amz-checksum-sha256"
    assert ChecksumVerifier("md5", None).header_name == "content-md5"


def test_checksum_headers_in() -> None:
    headers = [
        ("Content-MD5", " JfnnlDI7RTiF9RgfG2JNCw== "),
        ("X-Amz-Checksum-CRC32", "y/Q5Jg=="),
        ("x-amz-checksum-type", "FULL_OBJECT"),
        ("x-amz-checksum-algorithm", "CRC32"),
        ("x-amz-checksum-mode", "ENABLED"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ("x-amz-checksum-foo", "x"),
        ("Content-Type", "text/plain"),
    ]
    assert checksum_headers_in(headers) == [
        ("content-md5", "JfnnlDI7RTiF9RgfG2JNCw=="),
        ("x-amz-checksum-crc32", "y/Q5Jg=="),
    ]


def test_checksum_verifiers_from_headers_and_trailers() -> None:
    found = checksum_verifiers(
        [("x-amz-checksum-crc32", "y/Q5Jg=="), ("Content-MD5", "JfnnlDI7RTiF9RgfG2JNCw==")]
    )
    assert [(v.algorithm, v.expected_b64) for v in found] == [
        ("crc32", "y/Q5Jg=="),
        ("md5", "JfnnlDI7RTiF9RgfG2JNCw=="),
    ]
    from_trailer = checksum_verifiers(
        [], trailer_names=["X-Amz-Checksum-CRC64NVME", "x-amz-meta-a"]
    )
    assert [(v.algorithm, v.expected_b64) for v in from_trailer] == [("crc64nvme", None)]
    for verifier in found:
        verifier.update(CHECK_INPUT)
        verifier.verify()


@pytest.mark.parametrize(
    ("headers", "trailers"),
    [
        ([("x-amz-checksum-crc32", "y/Q5Jg=="), ("x-amz-checksum-crc32c", "4waSgw==")], []),
        ([("x-amz-checksum-crc32", "y/Q5Jg==")], ["x-amz-checksum-crc32c"]),
        ([("x-amz-checksum-crc32", "y/Q5Jg=="), ("x-amz-checksum-crc32", "y/Q5Jg==")], []),
    ],
)
def test_only_one_flexible_checksum(headers: list[tuple[str, str]], trailers: list[str]) -> None:
    with pytest.raises(S3Error) as caught:
        checksum_verifiers(headers, trailer_names=trailers)
    assert caught.value.message == (
        "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
    )


def test_pure_python_fallback_is_in_use_without_awscrt() -> None:
    # awscrt is optional; where it is absent the table CRCs must serve.
    if checksums._crt is None:
        assert isinstance(ChecksumVerifier("crc32c", None)._hasher, checksums._TableCrc)

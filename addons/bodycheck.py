"""What an object upload's body must satisfy, built from its headers and signature.

The result plugs into :class:`addons.transforms.UploadTransform`: an optional
aws-chunked decoder (verifying chunk signatures where the client signed them)
and verifiers for the signed SHA-256, Content-MD5 and flexible checksums, all
computed over the plaintext as it streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy.http import Headers

from addons.s3.awschunked import AwsChunkedDecoder, ChunkSignatureVerifier
from addons.s3.checksums import ChecksumVerifier, checksum_verifiers
from addons.s3.errors import S3Error
from addons.s3.sigv4 import AuthContext, PayloadHashVerifier, PayloadMode
from addons.transforms import BodyVerifier


class _SignedPayload:
    """Adapts the signed-SHA-256 check to the ``BodyVerifier`` shape."""

    def __init__(self, expected_hex: str) -> None:
        self._verifier = PayloadHashVerifier(expected_hex)

    def update(self, data: bytes) -> None:
        self._verifier.update(data)

    def verify(self) -> None:
        self._verifier.finish()


@dataclass
class UploadChecks:
    plaintext_length: int
    decoder: AwsChunkedDecoder | None = None
    verifiers: list[BodyVerifier] = field(default_factory=list)
    finish_hooks: list[Callable[[], None]] = field(default_factory=list)


def _length(value: str | None, header: str) -> int:
    if value is None:
        raise S3Error("MissingContentLength", f"You must provide the {header} HTTP header.")
    # ASCII digits only (str.isdigit() also takes "²", which int() refuses), and no
    # more than 19 of them (int() refuses over 4300; S3's limits are far below 10**19).
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise S3Error("InvalidArgument", f"Invalid {header}: {value!r}.")
    return int(value)


def upload_checks(headers: Headers, auth: AuthContext) -> UploadChecks:
    mode = auth.payload_mode
    encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",")]
    if "aws-chunked" in encodings and not mode.is_streaming:
        raise S3Error(
            "InvalidRequest", "aws-chunked bodies need a STREAMING-* x-amz-content-sha256 value."
        )
    trailer_names = [t.strip().lower() for t in headers.get("x-amz-trailer", "").split(",")]
    trailer_names = [t for t in trailer_names if t]
    if trailer_names and not mode.has_trailer:
        raise S3Error("InvalidRequest", "x-amz-trailer needs a STREAMING-*-TRAILER payload.")
    checksums = checksum_verifiers(headers.items(multi=True), trailer_names=trailer_names)
    verifiers: list[BodyVerifier] = list(checksums)
    if mode is PayloadMode.SIGNED:
        verifiers.append(_SignedPayload(auth.payload_hash))
    if not mode.is_streaming:
        return UploadChecks(
            _length(headers.get("content-length"), "Content-Length"), None, verifiers
        )
    length = _length(headers.get("x-amz-decoded-content-length"), "x-amz-decoded-content-length")
    decoder = AwsChunkedDecoder(
        chunk_signer=ChunkSignatureVerifier.from_auth(auth) if mode.chunks_signed else None,
        expected_trailers=trailer_names,
        expected_length=length,
    )
    hooks = [_trailer_hook(decoder, v) for v in checksums if v.expected_b64 is None]
    return UploadChecks(length, decoder, verifiers, hooks)


def _trailer_hook(decoder: AwsChunkedDecoder, verifier: ChecksumVerifier) -> Callable[[], None]:
    def take_trailer() -> None:
        value = decoder.trailers.get(verifier.header_name)
        if value is None:
            raise S3Error("InvalidRequest", f"The {verifier.header_name} trailer is missing.")
        verifier.set_expected(value)

    return take_trailer

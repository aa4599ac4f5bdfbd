"""Incremental decoding of ``Content-Encoding: aws-chunked`` request bodies.

The encoding, as S3 and the SDKs use it::

    hex-size[;chunk-signature=<64 hex>]\\r\\n <data> \\r\\n      (repeated)
    0[;chunk-signature=<64 hex>]\\r\\n
    [name:value\\r\\n ...]                                   (trailers)
    [x-amz-trailer-signature:<64 hex>\\r\\n]
    \\r\\n

Chunk signatures (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``) chain from
the seed signature of the request: each signs the previous signature and the
SHA-256 of its chunk's data; the trailer signature signs the last chunk
signature and the SHA-256 of the canonical trailers.

Memory stays bounded whatever the chunk sizes: data is passed on as it
arrives, so it leaves the decoder *before* the signature of its chunk has
been checked.  A mismatch raises on the ``feed`` that completes the chunk;
the caller must then abort the request (and the upstream upload) rather than
commit anything it has forwarded.

Like S3, the decoder answers malformed framing with ``IncompleteBody``, a
bad chunk or trailer signature with ``SignatureDoesNotMatch``, and bad
trailers with ``MalformedTrailerError``.  Where trailers are expected it
tolerates two framing variants that cannot hide a truncation: an empty line
between the last chunk and the trailers (as in AWS's documented example),
and a body that ends after the last complete trailer line without the empty
line that should close the section.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Final

from addons.s3.errors import S3Error
from addons.s3.sigv4 import EMPTY_SHA256, AuthContext, PayloadMode

__all__ = [
    "MIN_CHUNK_SIZE",
    "TRAILER_SIGNATURE",
    "AwsChunkedDecoder",
    "ChunkSignatureVerifier",
    "canonical_trailers",
    "chunk_string_to_sign",
    "trailer_string_to_sign",
]

CHUNK_ALGORITHM: Final = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM: Final = "AWS4-HMAC-SHA256-TRAILER"
TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"
# S3 refuses chunks smaller than this unless they are the last data chunk.
MIN_CHUNK_SIZE: Final = 8192
# The whole trailer section is buffered to check its signature; trailers are
# a handful of checksum headers, so a small cap keeps memory bounded.
MAX_TRAILER_BYTES: Final = 16 * 1024

_CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;chunk-signature=([0-9A-Fa-f]{64}))?")
_TRAILER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CRLF: Final = b"\r\n"


def chunk_string_to_sign(
    amz_date: str, scope: str, previous_signature: str, chunk_sha256_hex: str
) -> str:
    """The string signed by a chunk signature."""
    return "\n".join(
        (CHUNK_ALGORITHM, amz_date, scope, previous_signature, EMPTY_SHA256, chunk_sha256_hex)
    )


def trailer_string_to_sign(
    amz_date: str, scope: str, previous_signature: str, trailers_sha256_hex: str
) -> str:
    """The string signed by ``x-amz-trailer-signature``."""
    return "\n".join((TRAILER_ALGORITHM, amz_date, scope, previous_signature, trailers_sha256_hex))


def canonical_trailers(trailers: Mapping[str, str]) -> bytes:
    """Trailers as signed: ``name:value\\n`` per trailer, lowercase names, sorted."""
    lines = sorted(f"{name.lower()}:{value.strip()}\n" for name, value in trailers.items())
    return "".join(lines).encode("utf-8", "surrogateescape")


class ChunkSignatureVerifier:
    """Checks the chain of chunk signatures of a ``STREAMING-AWS4-HMAC-SHA256-*`` body."""

    def __init__(
        self,
        *,
        signing_key: bytes,
        amz_date: str,
        scope: str,
        seed_signature: str,
        trailer_signed: bool = False,
    ) -> None:
        self._signing_key = signing_key
        self._amz_date = amz_date
        self._scope = scope
        self._previous = seed_signature.lower()
        self._claimed: str | None = None
        self._hash = hashlib.sha256()
        self.trailer_signed = trailer_signed

    @classmethod
    def from_auth(cls, auth: AuthContext) -> ChunkSignatureVerifier:
        """The verifier for a request whose payload mode has signed chunks."""
        mode = auth.payload_mode
        if not mode.chunks_signed:
            raise ValueError(f"payload mode {mode.value} has no chunk signatures")
        return cls(
            signing_key=auth.signing_key,
            amz_date=auth.amz_date,
            scope=auth.scope,
            seed_signature=auth.seed_signature,
            trailer_signed=mode is PayloadMode.STREAMING_SIGNED_TRAILER,
        )

    @property
    def previous_signature(self) -> str:
        """The last signature verified (the seed signature before any chunk)."""
        return self._previous

    def begin_chunk(self, claimed_signature: str) -> None:
        self._claimed = claimed_signature
        self._hash = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def end_chunk(self) -> None:
        """Raise ``SignatureDoesNotMatch`` unless the chunk just read was signed as claimed."""
        if self._claimed is None:
            raise RuntimeError("end_chunk() without begin_chunk()")
        claimed, self._claimed = self._claimed, None
        string_to_sign = chunk_string_to_sign(
            self._amz_date, self._scope, self._previous, self._hash.hexdigest()
        )
        self._previous = self._check(string_to_sign, claimed)

    def verify_trailer(self, canonical: bytes, claimed_signature: str) -> None:
        """Raise ``SignatureDoesNotMatch`` unless the trailers were signed as claimed."""
        string_to_sign = trailer_string_to_sign(
            self._amz_date, self._scope, self._previous, hashlib.sha256(canonical).hexdigest()
        )
        self._previous = self._check(string_to_sign, claimed_signature)

    def _check(self, string_to_sign: str, claimed: str) -> str:
        signature = hmac.new(
            self._signing_key, string_to_sign.encode("utf-8", "surrogateescape"), hashlib.sha256
        ).hexdigest()
        claimed_bytes = claimed.lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(signature.encode("ascii"), claimed_bytes):
            raise S3Error(
                "SignatureDoesNotMatch",
                extra={"StringToSign": string_to_sign, "SignatureProvided": claimed},
            )
        return signature


class _State(enum.Enum):
    CHUNK_HEADER = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()  # the CRLF after a chunk's data
    TRAILERS = enum.auto()
    DONE = enum.auto()


def _incomplete(detail: str) -> S3Error:
    # S3 gives this one answer to every framing problem; the detail is for logs.
    err = S3Error("IncompleteBody")
    err.add_note(detail)
    return err


def _malformed_trailer(detail: str) -> S3Error:
    err = S3Error("MalformedTrailerError")
    err.add_note(detail)
    return err


class AwsChunkedDecoder:
    """Decodes an ``aws-chunked`` body fed in arbitrary pieces.

    ``chunk_signer`` is given for signed streaming payloads (chunks without a
    signature are then refused) and omitted for unsigned ones (chunks with a
    signature are then refused).  ``expected_trailers`` lists the names that
    ``x-amz-trailer`` declared; exactly those must arrive.
    ``expected_length`` is ``x-amz-decoded-content-length``, when known.
    ``min_chunk_size`` is S3's minimum for every chunk but the last data one
    (0 disables the check).
    """

    def __init__(
        self,
        *,
        chunk_signer: ChunkSignatureVerifier | None,
        expected_trailers: Sequence[str] = (),
        max_chunk_header: int = 4096,
        expected_length: int | None = None,
        min_chunk_size: int = MIN_CHUNK_SIZE,
    ) -> None:
        self._signer = chunk_signer
        self._expected_trailers = frozenset(name.strip().lower() for name in expected_trailers)
        self._max_line = max_chunk_header
        self._expected_length = expected_length
        self._min_chunk_size = min_chunk_size

        self._state = _State.CHUNK_HEADER
        self._line = bytearray()  # the part of a header or trailer line read so far
        self._remaining = 0  # data bytes left in the current chunk
        self._declared = 0  # payload bytes announced by the chunk headers so far
        self._decoded = 0
        self._data_chunks = 0
        self._last_chunk_size = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self._trailer_bytes = 0
        self._trailer_lines = 0
        self._skipped_separator = False
        self._error: S3Error | None = None

    @property
    def trailers(self) -> dict[str, str]:
        """Trailers by lowercase name; complete (and verified) once ``complete`` is true."""
        return dict(self._trailers)

    @property
    def decoded_length(self) -> int:
        """Payload bytes decoded so far."""
        return self._decoded

    @property
    def complete(self) -> bool:
        """True once the final chunk and the trailers have been read and checked."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> list[bytes]:
        """Decode the next piece of the body; return the payload bytes it carried."""
        if self._error is not None:
            raise self._error
        pieces: list[bytes] = []
        try:
            self._feed(data, pieces)
        except S3Error as err:
            self._error = err
            raise
        return pieces

    def finish(self) -> None:
        """Call at the end of the body: raise unless it was complete."""
        if self._error is not None:
            raise self._error
        try:
            self._finish()
        except S3Error as err:
            self._error = err
            raise

    def _finish(self) -> None:
        if self._state is _State.DONE:
            return
        if (
            self._state is _State.TRAILERS
            and self._expects_trailer_section()
            and not self._line
            and (self._trailer_lines or self._skipped_separator)
        ):
            # Tolerated: the closing empty line is missing.  Whole lines only,
            # so a cut inside a value is still an error.
            self._end_trailers()  # which names any declared trailer that is missing
            return
        raise _incomplete("the body ended before the final chunk and its trailers")

    def _feed(self, data: bytes, pieces: list[bytes]) -> None:
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.CHUNK_DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                if self._signer is not None:
                    self._signer.update(piece)
                # Inside a large chunk most pieces are whole inputs: pass those on uncopied.
                pieces.append(data if take == end else bytes(piece))
                pos += take
                self._decoded += take
                self._remaining -= take
                if self._remaining == 0:
                    if self._signer is not None:
                        self._signer.end_chunk()
                    self._state = _State.CHUNK_END
            elif state is _State.DONE:
                raise _incomplete("data after the end of the aws-chunked body")
            else:
                limit = 2 if state is _State.CHUNK_END else self._max_line
                line, pos = self._read_line(data, pos, limit)
                if line is None:
                    continue
                if state is _State.CHUNK_END:
                    if line:
                        raise _incomplete("chunk data is longer than its declared size")
                    self._state = _State.CHUNK_HEADER
                elif state is _State.CHUNK_HEADER:
                    self._chunk_header(line)
                else:
                    self._trailer_line(line)

    def _read_line(self, data: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
        """Gather one CRLF-terminated line of at most ``limit`` bytes; return it without CRLF."""
        room = limit - len(self._line)
        newline = data.find(b"\n", pos, pos + room)
        if newline < 0:
            taken = data[pos : pos + room]
            self._line += taken
            if len(self._line) >= limit:
                raise _incomplete("a chunk header or trailer line is too long or not terminated")
            return None, pos + len(taken)
        self._line += data[pos : newline + 1]
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(_CRLF):
            raise _incomplete("a line of the aws-chunked framing does not end with CRLF")
        return line[:-2], newline + 1

    def _chunk_header(self, line: bytes) -> None:
        match = _CHUNK_HEADER.fullmatch(line)
        if match is None:
            raise _incomplete(f"malformed chunk header {line[:80]!r}")
        size = int(match[1], 16)
        signature = match[2]
        if (signature is None) != (self._signer is None):
            raise _incomplete(
                "chunk signature missing" if signature is None else "chunk signature not expected"
            )
        if size and self._data_chunks and self._last_chunk_size < self._min_chunk_size:
            raise S3Error(
                "InvalidChunkSizeError",
                extra={"Chunk": str(self._data_chunks), "BadChunkSize": str(self._last_chunk_size)},
            )
        if self._expected_length is not None and self._declared + size > self._expected_length:
            raise _incomplete("more data than x-amz-decoded-content-length declared")
        if self._signer is not None and signature is not None:
            self._signer.begin_chunk(signature.decode("ascii"))
        if size == 0:
            if self._signer is not None:
                self._signer.end_chunk()
            self._state = _State.TRAILERS
            return
        self._declared += size
        self._data_chunks += 1
        self._last_chunk_size = size
        self._remaining = size
        self._state = _State.CHUNK_DATA

    def _expects_trailer_section(self) -> bool:
        trailer_signed = self._signer is not None and self._signer.trailer_signed
        return bool(self._expected_trailers) or trailer_signed

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _malformed_trailer("the trailers are too large")
        if not line:
            if (
                not self._trailer_lines
                and not self._skipped_separator
                and self._expects_trailer_section()
            ):
                # Tolerated: an empty line between the last chunk and the trailers.
                self._skipped_separator = True
                return
            self._end_trailers()
            return
        self._trailer_lines += 1
        if self._trailer_signature is not None:
            raise _malformed_trailer("a trailer follows x-amz-trailer-signature")
        text = line.decode("utf-8", "surrogateescape")
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not _TRAILER_NAME.fullmatch(name) or "\r" in value:
            raise _malformed_trailer(f"malformed trailer line {text[:80]!r}")
        value = value.strip(" \t")
        if name == TRAILER_SIGNATURE:
            self._trailer_signature = value
        elif name in self._trailers:
            raise _malformed_trailer(f"trailer {name} appears twice")
        elif name not in self._expected_trailers:
            raise _malformed_trailer(f"trailer {name} was not declared in x-amz-trailer")
        else:
            self._trailers[name] = value

    def _end_trailers(self) -> None:
        missing = self._expected_trailers - self._trailers.keys()
        if missing:
            raise _malformed_trailer(f"declared trailers missing: {', '.join(sorted(missing))}")
        signer = self._signer
        if signer is not None and signer.trailer_signed:
            if self._trailer_signature is None:
                raise _malformed_trailer("x-amz-trailer-signature is missing")
            signer.verify_trailer(canonical_trailers(self._trailers), self._trailer_signature)
        elif self._trailer_signature is not None:
            raise _malformed_trailer("x-amz-trailer-signature in a body without signed trailers")
        if self._expected_length is not None and self._decoded != self._expected_length:
            raise _incomplete("less data than x-amz-decoded-content-length declared")
        self._state = _State.DONE

"""Upload ids that carry their upload's data key, so no replica needs shared state.

CreateMultipartUpload answers the client with a gateway upload id instead of
the backend's. It holds the data key wrapped under the active KEK, together
with the backend's upload id and the parameters the parts are encrypted with.
The wrap authenticates a context binding the bucket, the object key and the
backend upload id, so a token edited, forged, or presented for another object
or upload does not open. Layout (base64url, unpadded, after the version
prefix)::

    algorithm id u8 | log2(chunk size) u8 | key id length u8 | key id
    | wrapped key length u16 | wrapped key | backend upload id (UTF-8, the rest)

See docs/adr/0005-stateless-multipart-upload-ids.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from urllib.parse import quote

from crypto import Algorithm, DataKey, FormatError, Keyring
from crypto.format import MAX_CHUNK_SIZE_LOG2, MIN_CHUNK_SIZE_LOG2, chunk_size_log2
from crypto.keyring import validate_key_id

__all__ = ["TOKEN_PREFIX", "UploadToken", "with_upload_id"]

TOKEN_PREFIX = "s3gw1."
# Generous for KMS blobs (about 180 bytes) and long backend ids; AWS's are about 100.
MAX_TOKEN_LENGTH = 2048
_MAX_BACKEND_ID = 1024
_FIXED = struct.Struct(">BBB")
_WRAPPED_LENGTH = struct.Struct(">H")
# Domain separation: never the context of an object envelope's wrap.
_CONTEXT_LABEL = "S3GW multipart upload v1"


def _context(
    bucket: str, key: str, backend_upload_id: str, algorithm: Algorithm, log2: int
) -> bytes:
    # JSON keeps the fields unambiguous whatever characters bucket and key hold.
    fields = [_CONTEXT_LABEL, bucket, key, backend_upload_id, int(algorithm), log2]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True)
class UploadToken:
    """The gateway's upload id: the backend's id plus the wrapped data key."""

    backend_upload_id: str
    key_id: str
    wrapped_key: bytes
    algorithm: Algorithm
    chunk_size_log2: int

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_size_log2

    @classmethod
    def seal(
        cls,
        data_key: DataKey,
        keyring: Keyring,
        *,
        bucket: str,
        key: str,
        backend_upload_id: str,
    ) -> UploadToken:
        """Wrap ``data_key`` for this upload under the keyring's active KEK."""
        _check_backend_id(backend_upload_id)
        log2 = chunk_size_log2(data_key.chunk_size)
        context = _context(bucket, key, backend_upload_id, data_key.algorithm, log2)
        key_id, wrapped = keyring.wrap(bytes(data_key.material), context)
        return cls(backend_upload_id, validate_key_id(key_id), wrapped, data_key.algorithm, log2)

    def open(self, keyring: Keyring, *, bucket: str, key: str) -> DataKey:
        """The upload's data key; ``KeyUnwrapError`` or ``UnknownKeyId`` unless this
        token was issued for this bucket and key by a gateway holding the KEK."""
        context = _context(
            bucket, key, self.backend_upload_id, self.algorithm, self.chunk_size_log2
        )
        material = keyring.unwrap(self.key_id, self.wrapped_key, context)
        return DataKey(material, self.algorithm, self.chunk_size)

    def encode(self) -> str:
        key_id = self.key_id.encode("ascii")
        payload = b"".join(
            [
                _FIXED.pack(self.algorithm, self.chunk_size_log2, len(key_id)),
                key_id,
                _WRAPPED_LENGTH.pack(len(self.wrapped_key)),
                self.wrapped_key,
                self.backend_upload_id.encode("utf-8"),
            ]
        )
        return TOKEN_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str) -> UploadToken:
        """Parse a token strictly (``FormatError`` otherwise); nothing is authenticated
        until :meth:`open`."""
        if len(text) > MAX_TOKEN_LENGTH or not text.startswith(TOKEN_PREFIX):
            raise FormatError("not a gateway upload id")
        body = text[len(TOKEN_PREFIX) :]
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise FormatError("not a gateway upload id") from None
        if base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii") != body:
            raise FormatError("not a canonical gateway upload id")
        try:
            algorithm_id, log2, key_id_length = _FIXED.unpack_from(payload)
            position = _FIXED.size
            key_id = payload[position : position + key_id_length].decode("ascii")
            position += key_id_length
            (wrapped_length,) = _WRAPPED_LENGTH.unpack_from(payload, position)
            position += _WRAPPED_LENGTH.size
            wrapped = payload[position : position + wrapped_length]
            position += wrapped_length
            backend_upload_id = payload[position:].decode("utf-8")
        except (struct.error, UnicodeDecodeError):
            raise FormatError("malformed gateway upload id") from None
        if len(key_id) != key_id_length or len(wrapped) != wrapped_length:
            raise FormatError("malformed gateway upload id")
        if not MIN_CHUNK_SIZE_LOG2 <= log2 <= MAX_CHUNK_SIZE_LOG2:
            raise FormatError("invalid chunk size in gateway upload id")
        if not 28 <= wrapped_length <= 256:
            raise FormatError("invalid wrapped key length in gateway upload id")
        _check_backend_id(backend_upload_id)
        return cls(
            backend_upload_id,
            validate_key_id(key_id),
            wrapped,
            Algorithm.from_id(algorithm_id),
            log2,
        )


def _check_backend_id(backend_upload_id: str) -> None:
    if not 0 < len(backend_upload_id) <= _MAX_BACKEND_ID or not backend_upload_id.isprintable():
        raise FormatError("unusable backend upload id")


def with_upload_id(path: str, upload_id: str) -> str:
    """``path`` with its ``uploadId`` query parameter set to ``upload_id``.

    The other parameters keep their bytes; the new value is encoded the way
    SigV4 canonicalises it, so the re-signer's signature matches what the
    backend computes.
    """
    base, _, query = path.partition("?")
    encoded = "uploadId=" + quote(upload_id, safe="-_.~")
    items = [encoded if item.partition("=")[0] == "uploadId" else item for item in query.split("&")]
    return f"{base}?{'&'.join(items)}"

"""Exceptions raised by the crypto library.

Every failure is a subclass of :class:`CryptoError`, so callers (and the fuzz
tests) can rely on never seeing anything else escape from parsing or
decryption of untrusted input.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by this library."""


class FormatError(CryptoError):
    """Metadata or a frame header is malformed, or a size is impossible."""


class AlgorithmNotAllowed(FormatError):
    """The algorithm named by metadata or a frame header is not allow-listed."""


class UnknownKeyId(CryptoError):
    """The key-encryption key named by the metadata is not in the keyring."""


class KeyUnwrapError(CryptoError):
    """The wrapped data key failed authentication.

    Raised for a wrong key-encryption key, a tampered wrapped key, and any
    change of the parameters bound into the wrap (algorithm downgrade,
    chunk size, key id, format version).
    """


class CommitmentMismatch(CryptoError):
    """The frame's key commitment does not match the data key.

    Checked before any chunk is decrypted, so a wrong key is reported up
    front instead of as a tag failure somewhere in the stream.
    """


class IntegrityError(CryptoError):
    """A chunk failed authentication (bit flip, reordering, duplication,
    a chunk from another object, or a frame that does not belong here)."""


class TruncatedError(IntegrityError):
    """The ciphertext ended before the final chunk of its last frame."""


class TrailingDataError(IntegrityError):
    """Bytes followed the final chunk of the ciphertext."""


class LengthMismatch(CryptoError):
    """The encryptor got more or fewer plaintext bytes than it was promised."""


class RangeNotSatisfiable(CryptoError):
    """A byte range does not overlap the object (HTTP 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for an object of {size} bytes")
        self.size = size

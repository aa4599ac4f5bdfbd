"""Key-encryption keys (KEKs) with key ids.

A :class:`Keyring` wraps and unwraps data keys. The gateway only talks to the
protocol, so a KMS-backed keyring (AWS KMS, Vault transit...) can replace the
:class:`StaticKeyring` that holds KEKs from the configuration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crypto.errors import FormatError, KeyUnwrapError, UnknownKeyId

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEK_LENGTH = 32
_WRAP_NONCE_LENGTH = 12

# scrypt cost for passphrase-derived KEKs: about 0.1 s and 32 MiB per derivation,
# paid once at start-up.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE_SALT = 16


@runtime_checkable
class Keyring(Protocol):
    """Wraps data keys under the active KEK and unwraps them under any known KEK.

    ``context`` is authenticated with the wrapped key (AES-GCM AAD, or a KMS
    encryption context), so the envelope's parameters cannot be changed
    without :class:`KeyUnwrapError`.
    """

    @property
    def active_key_id(self) -> str: ...

    def key_ids(self) -> frozenset[str]: ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Return ``(key_id, wrapped_key)`` under the active KEK."""
        ...

    def unwrap(self, key_id: str, wrapped_key: bytes, context: bytes) -> bytes: ...


def validate_key_id(key_id: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise FormatError("key ids are 1-32 characters of A-Z a-z 0-9 _ -")
    return key_id


def kek_from_passphrase(passphrase: str, salt: bytes) -> bytes:
    """Derive a KEK from a passphrase with scrypt; store ``salt`` with the config."""
    if len(salt) < MIN_PASSPHRASE_SALT:
        raise FormatError("the passphrase salt must be at least 16 bytes")
    if not passphrase:
        raise FormatError("empty passphrase")
    kdf = Scrypt(salt=salt, length=KEK_LENGTH, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode("utf-8"))


class StaticKeyring:
    """KEKs held in memory, wrapping with AES-256-GCM."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        for key_id, kek in keys.items():
            validate_key_id(key_id)
            if len(kek) != KEK_LENGTH:
                raise FormatError(f"key {key_id!r} must be {KEK_LENGTH} bytes")
        if active_key_id not in keys:
            # Only a well-formed id is echoed: a KEK pasted here by mistake must not be.
            valid = KEY_ID_PATTERN.fullmatch(active_key_id)
            shown = repr(active_key_id) if valid else "(not a key id)"
            raise UnknownKeyId(f"active key {shown} is not in the keyring")
        self._keks = {key_id: AESGCM(bytes(kek)) for key_id, kek in keys.items()}
        self._active = active_key_id

    @property
    def active_key_id(self) -> str:
        return self._active

    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keks)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_WRAP_NONCE_LENGTH)
        aad = self._aad(self._active, context)
        return self._active, nonce + self._keks[self._active].encrypt(nonce, data_key, aad)

    def unwrap(self, key_id: str, wrapped_key: bytes, context: bytes) -> bytes:
        kek = self._keks.get(key_id)
        if kek is None:
            raise UnknownKeyId(f"key {key_id!r} is not in the keyring")
        nonce, sealed = wrapped_key[:_WRAP_NONCE_LENGTH], wrapped_key[_WRAP_NONCE_LENGTH:]
        if len(nonce) != _WRAP_NONCE_LENGTH:
            raise KeyUnwrapError("wrapped key is too short")
        try:
            return kek.decrypt(nonce, sealed, self._aad(key_id, context))
        except InvalidTag:
            raise KeyUnwrapError(
                f"the wrapped data key does not open with key {key_id!r}"
            ) from None

    @staticmethod
    def _aad(key_id: str, context: bytes) -> bytes:
        return b"S3G1 wrap|" + key_id.encode() + b"|" + context

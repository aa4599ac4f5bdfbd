"""Keyrings, passphrase KEKs, envelopes and key rotation."""

from __future__ import annotations

import pytest

from crypto import (
    Algorithm,
    DataKey,
    Envelope,
    FormatError,
    Keyring,
    KeyUnwrapError,
    StaticKeyring,
    UnknownKeyId,
    kek_from_passphrase,
)
from crypto.envelope import MAX_ENVELOPE_LENGTH
from crypto.format import FrameHeader
from crypto.keyring import validate_key_id
from tests.crypto.helpers import C, data_key, decrypt, encrypt, plaintext_of

OLD_KEK = bytes(range(32))
NEW_KEK = bytes(range(32, 64))
SALT = b"0123456789abcdef"


def test_passphrase_kdf_is_deterministic_per_salt() -> None:
    kek = kek_from_passphrase("correct horse", SALT)
    assert len(kek) == 32
    assert kek_from_passphrase("correct horse", SALT) == kek
    assert kek_from_passphrase("correct horse", SALT[::-1]) != kek
    assert kek_from_passphrase("correct horsf", SALT) != kek
    # Usable as a KEK directly.
    keyring = StaticKeyring({"pw": kek}, "pw")
    assert Envelope.seal(data_key(), keyring).open(keyring).material == data_key().material


@pytest.mark.parametrize(
    ("passphrase", "salt"), [("pw", b"short salt 15 b"), ("pw", b""), ("", SALT)]
)
def test_passphrase_kdf_rejects_weak_inputs(passphrase: str, salt: bytes) -> None:
    with pytest.raises(FormatError):
        kek_from_passphrase(passphrase, salt)


@pytest.mark.parametrize("key_id", ["a", "K-1", "prod_2024-06", "x" * 32, "0"])
def test_valid_key_ids(key_id: str) -> None:
    assert validate_key_id(key_id) == key_id
    assert StaticKeyring({key_id: OLD_KEK}, key_id).active_key_id == key_id


# Key ids appear in the envelope, so separators and non-ASCII must be rejected.
@pytest.mark.parametrize("key_id", ["", "x" * 33, "a b", "a;b", "a=b", "k\u00e9", "a.b", "a\n"])
def test_invalid_key_ids(key_id: str) -> None:
    with pytest.raises(FormatError):
        validate_key_id(key_id)
    with pytest.raises(FormatError):
        StaticKeyring({key_id: OLD_KEK}, key_id)


def test_static_keyring_validation() -> None:
    with pytest.raises(FormatError):
        StaticKeyring({"k": bytes(16)}, "k")
    with pytest.raises(UnknownKeyId):
        StaticKeyring({"k": OLD_KEK}, "other")
    keyring = StaticKeyring({"a": OLD_KEK, "b": NEW_KEK}, "b")
    assert isinstance(keyring, Keyring)
    assert keyring.key_ids() == {"a", "b"} and keyring.active_key_id == "b"


def test_wrap_is_randomised() -> None:
    keyring = StaticKeyring({"k": OLD_KEK}, "k")
    first, second = Envelope.seal(data_key(), keyring), Envelope.seal(data_key(), keyring)
    assert first.wrapped_key != second.wrapped_key


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_rewrap_rotation(algorithm: Algorithm) -> None:
    """After rewrapping under the new active key the old KEK can be retired."""
    key = data_key(algorithm)
    plaintext = plaintext_of(2 * C + 3)
    header, ciphertext = encrypt(key, plaintext)
    old_text = Envelope.seal(key, StaticKeyring({"old": OLD_KEK}, "old"), frame=header).encode()

    rotating = StaticKeyring({"old": OLD_KEK, "new": NEW_KEK}, "new")
    new_envelope = Envelope.decode(old_text).rewrap(rotating)
    assert new_envelope.key_id == "new"
    assert new_envelope.frame == header and new_envelope.algorithm is algorithm
    new_text = new_envelope.encode()

    only_new = StaticKeyring({"new": NEW_KEK}, "new")
    opened = Envelope.decode(new_text)
    assert decrypt(opened.open(only_new), ciphertext, expected_frame=opened.frame) == plaintext
    with pytest.raises(UnknownKeyId):
        Envelope.decode(old_text).open(only_new)


def test_rewrap_keeps_the_multipart_flag() -> None:
    both = StaticKeyring({"old": OLD_KEK, "new": NEW_KEK}, "new")
    envelope = Envelope.seal(data_key(), StaticKeyring({"old": OLD_KEK}, "old"), multipart=True)
    rewrapped = Envelope.decode(envelope.rewrap(both).encode())
    assert rewrapped.multipart and rewrapped.key_id == "new"
    assert rewrapped.open(both).material == data_key().material


class RecordingKms:
    """A stand-in for a KMS-backed keyring: the context must come back unchanged."""

    def __init__(self) -> None:
        self.contexts: list[bytes] = []
        self._store: dict[bytes, tuple[bytes, bytes]] = {}

    @property
    def active_key_id(self) -> str:
        return "kms"

    def key_ids(self) -> frozenset[str]:
        return frozenset({"kms"})

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        self.contexts.append(context)
        handle = len(self._store).to_bytes(28, "big")  # opaque ciphertext blob
        self._store[handle] = (data_key, context)
        return "kms", handle

    def unwrap(self, key_id: str, wrapped_key: bytes, context: bytes) -> bytes:
        if key_id != "kms":
            raise UnknownKeyId(key_id)
        key, sealed_context = self._store[wrapped_key]
        if context != sealed_context:
            raise KeyUnwrapError("encryption context mismatch")
        return key


def test_envelope_works_with_any_keyring() -> None:
    kms = RecordingKms()
    assert isinstance(kms, Keyring)
    key = data_key(Algorithm.CHACHA20_POLY1305, 4096)
    text = Envelope.seal(key, kms, multipart=True).encode()
    assert kms.contexts == [b"v=1;a=2;c=12;p=1"]
    assert Envelope.decode(text).open(kms).material == key.material
    with pytest.raises(KeyUnwrapError):
        Envelope.decode(text.replace(";a=2", "")).open(kms)


def test_seal_rejects_a_frame_of_other_parameters() -> None:
    keyring = StaticKeyring({"k": OLD_KEK}, "k")
    header, _ = encrypt(data_key(), b"abc")
    with pytest.raises(FormatError):
        Envelope.seal(data_key(Algorithm.CHACHA20_POLY1305), keyring, frame=header)
    with pytest.raises(FormatError):
        Envelope.seal(data_key(chunk_size=2048), keyring, frame=header)
    with pytest.raises(FormatError):
        Envelope.seal(data_key(), keyring, frame=header, multipart=True)


def test_envelope_round_trip_and_size() -> None:
    """The largest envelope this keyring produces stays far below the metadata budget."""
    keyring = StaticKeyring({"k" * 32: OLD_KEK}, "k" * 32)
    key = data_key(Algorithm.CHACHA20_POLY1305, 1 << 24)
    header = FrameHeader(Algorithm.CHACHA20_POLY1305, 24, 0, bytes(16), 5 * 2**40, bytes(16))
    envelope = Envelope.seal(key, keyring, frame=header)
    text = envelope.encode()
    assert Envelope.decode(text) == envelope
    assert len(text) <= 220 < MAX_ENVELOPE_LENGTH


def test_defaults_are_omitted_from_the_envelope() -> None:
    keyring = StaticKeyring({"k": OLD_KEK}, "k")
    text = Envelope.seal(data_key(chunk_size=64 * 1024), keyring).encode()
    assert [field[0] for field in text.split(";")] == ["v", "k", "w"]


def test_data_key_close_zeroizes() -> None:
    with DataKey.generate() as key:
        material = key.material
        assert any(material)
    assert material == bytearray(32)
    with pytest.raises(FormatError):
        DataKey(bytes(16))

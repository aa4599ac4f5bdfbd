"""Gateway upload ids (addons.s3.uploadid): the data key sealed for one upload."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.s3.uploadid import TOKEN_PREFIX, UploadToken, with_upload_id
from crypto import (
    Algorithm,
    CryptoError,
    DataKey,
    FormatError,
    KeyUnwrapError,
    StaticKeyring,
    UnknownKeyId,
)

KEYRING = StaticKeyring({"k1": os.urandom(32), "k0": os.urandom(32)}, "k1")
BACKEND_ID = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA+/=="


def sealed(key: str = "dir/obj", backend_id: str = BACKEND_ID) -> tuple[DataKey, UploadToken]:
    data_key = DataKey.generate(Algorithm.CHACHA20_POLY1305, 1 << 20)
    token = UploadToken.seal(data_key, KEYRING, bucket="b", key=key, backend_upload_id=backend_id)
    return data_key, token


def test_round_trip_gives_back_the_data_key_and_parameters() -> None:
    data_key, token = sealed()
    text = token.encode()
    assert text.startswith(TOKEN_PREFIX)
    assert set(text[len(TOKEN_PREFIX) :]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    decoded = UploadToken.decode(text)
    assert decoded == token
    assert decoded.backend_upload_id == BACKEND_ID
    opened = decoded.open(KEYRING, bucket="b", key="dir/obj")
    assert opened.material == data_key.material
    assert (opened.algorithm, opened.chunk_size) == (Algorithm.CHACHA20_POLY1305, 1 << 20)


def test_any_keyring_with_the_kek_opens_it() -> None:
    """Another replica: same KEKs, another process (another keyring object)."""
    keks = {"k1": os.urandom(32)}
    data_key = DataKey.generate()
    text = UploadToken.seal(
        data_key, StaticKeyring(keks, "k1"), bucket="b", key="k", backend_upload_id="u"
    ).encode()
    other = StaticKeyring(dict(keks), "k1")
    opened = UploadToken.decode(text).open(other, bucket="b", key="k")
    assert opened.material == data_key.material


@pytest.mark.parametrize(
    ("bucket", "key"), [("b", "dir/other"), ("other", "dir/obj"), ("b", "dir/obj ")]
)
def test_bound_to_bucket_and_key(bucket: str, key: str) -> None:
    _, token = sealed()
    with pytest.raises(KeyUnwrapError):
        UploadToken.decode(token.encode()).open(KEYRING, bucket=bucket, key=key)


def test_bound_to_the_backend_upload_id_and_parameters() -> None:
    _, token = sealed()
    for field, value in [
        ("backend_upload_id", "another-upload"),
        ("algorithm", Algorithm.AES_256_GCM),
        ("chunk_size_log2", 16),
    ]:
        edited = UploadToken(**{**token.__dict__, field: value})
        with pytest.raises(KeyUnwrapError):
            UploadToken.decode(edited.encode()).open(KEYRING, bucket="b", key="dir/obj")


def test_unknown_kek() -> None:
    _, token = sealed()
    alone = StaticKeyring({"k0": os.urandom(32)}, "k0")
    with pytest.raises(UnknownKeyId):
        token.open(alone, bucket="b", key="dir/obj")


def test_every_bit_flip_fails_to_decode_or_to_open() -> None:
    _, token = sealed(backend_id="abc")
    payload = base64.urlsafe_b64decode(token.encode()[len(TOKEN_PREFIX) :] + "==")
    for bit in range(len(payload) * 8):
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        text = TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(CryptoError):
            UploadToken.decode(text).open(KEYRING, bucket="b", key="dir/obj")


@pytest.mark.parametrize(
    "text",
    [
        "",
        BACKEND_ID,  # a backend's own id
        TOKEN_PREFIX,
        TOKEN_PREFIX + "!!!!",
        TOKEN_PREFIX + "AAAA",
        TOKEN_PREFIX + "A" * 3000,
        "S3GW1." + "AAAA",
    ],
)
def test_malformed_tokens(text: str) -> None:
    with pytest.raises(FormatError):
        UploadToken.decode(text)


def test_non_canonical_base64_is_refused() -> None:
    _, token = sealed(backend_id="ab")
    text = token.encode()
    with pytest.raises(FormatError):
        UploadToken.decode(text + "=")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.binary(max_size=400))
def test_decode_raises_only_format_errors(text: str, payload: bytes) -> None:
    encoded = TOKEN_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    for candidate in (text, TOKEN_PREFIX + text, encoded):
        try:
            token = UploadToken.decode(candidate)
        except FormatError:
            continue
        with pytest.raises(CryptoError):
            token.open(KEYRING, bucket="b", key="k")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/b/k?uploadId=s3gw1.x", "/b/k?uploadId=a%2Bb%2Fc%3D"),
        (
            "/b/k?partNumber=2&uploadId=t&x-id=UploadPart",
            "/b/k?partNumber=2&uploadId=a%2Bb%2Fc%3D&x-id=UploadPart",
        ),
        ("/b/k%20x?uploadId=t&max-parts=5", "/b/k%20x?uploadId=a%2Bb%2Fc%3D&max-parts=5"),
    ],
)
def test_with_upload_id(path: str, expected: str) -> None:
    assert with_upload_id(path, "a+b/c=") == expected

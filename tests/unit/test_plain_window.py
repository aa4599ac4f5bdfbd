"""PlainWindowTransform: legacy (unencrypted) bodies pass, S3G1 frames never do."""

from __future__ import annotations

import os

import pytest

from addons.transforms import InputWindow, PlainWindowTransform
from crypto import DataKey, FrameEncryptor
from crypto.format import HEADER_LENGTH


def run(transform: PlainWindowTransform, body: bytes, read: int) -> bytes:
    out = b""
    for offset in range(0, len(body), read):
        pieces = transform(body[offset : offset + read])
        assert all(pieces), "an empty piece would end a chunked body"
        out += b"".join(pieces)
    return out + b"".join(transform(b""))


def ciphertext(size: int) -> bytes:
    with DataKey.generate() as key:
        encryptor = FrameEncryptor(key, size)
        try:
            return b"".join([*encryptor.update(os.urandom(size)), *encryptor.finalize()])
        finally:
            encryptor.close()


@pytest.mark.parametrize("read", [1, 7, HEADER_LENGTH, 65535])
@pytest.mark.parametrize("size", [0, 1, HEADER_LENGTH - 1, HEADER_LENGTH, 100_000])
def test_plaintext_passes_whole(size: int, read: int) -> None:
    body = b"S3G1" + os.urandom(max(size - 4, 0)) if size >= 4 else os.urandom(size)
    cuts: list[bool] = []
    transform = PlainWindowTransform(None, from_start=True, on_ciphertext=lambda: cuts.append(True))
    assert run(transform, body, read) == body
    assert not cuts


@pytest.mark.parametrize("read", [1, 13, 65535])
def test_a_frame_is_cut_before_any_byte(read: int) -> None:
    cuts: list[bool] = []
    transform = PlainWindowTransform(None, from_start=True, on_ciphertext=lambda: cuts.append(True))
    assert run(transform, ciphertext(70_000), read) == b""
    assert cuts == [True]


def test_window_is_selected_after_the_check() -> None:
    body = os.urandom(1000)
    transform = PlainWindowTransform(
        InputWindow(10, 100), from_start=True, on_ciphertext=lambda: pytest.fail("cut")
    )
    assert run(transform, body, 3) == body[10:110]


def test_a_window_past_the_start_is_not_checked() -> None:
    body = ciphertext(1000)
    transform = PlainWindowTransform(
        InputWindow(0, 50), from_start=False, on_ciphertext=lambda: pytest.fail("cut")
    )
    assert run(transform, body, 64) == body[:50]


@pytest.mark.parametrize("read", [1, 100, 65535])
@pytest.mark.parametrize(("skip", "length"), [(0, 500), (10, 90), (0, 0)])
def test_bytes_read_apart_go_first(read: int, skip: int, length: int) -> None:
    """An unencrypted object's bytes before the fetched window (read apart) lead,
    also when the window contributes nothing."""
    fetched = os.urandom(1000)
    prefix = os.urandom(64)
    transform = PlainWindowTransform(
        InputWindow(skip, length), from_start=False, on_ciphertext=lambda: None, prefix=prefix
    )
    assert run(transform, fetched, read) == prefix + fetched[skip : skip + length]

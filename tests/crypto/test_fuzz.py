"""Fuzzing untrusted inputs: only CryptoError subclasses may escape.

Stored metadata and bodies are attacker-controlled; a ValueError or IndexError
escaping from the parser would turn into a 500 (or worse, a half-sent body)
instead of a clean refusal.
"""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from crypto import (
    CryptoError,
    Envelope,
    FormatError,
    FrameHeader,
    ObjectDecryptor,
    RangeDecryptor,
    StaticKeyring,
    plan_range,
)
from crypto.format import HEADER_LENGTH
from tests.crypto.helpers import C, check_pieces, data_key, encrypt, fast, plaintext_of, split

KEY = data_key()
KEYRING = StaticKeyring({"k1": bytes(range(32)), "k2": bytes(range(1, 33))}, "k1")
PLAINTEXT = plaintext_of(3 * C + 100)
HEADER, CIPHERTEXT = encrypt(KEY, PLAINTEXT)
ENVELOPE = Envelope.seal(KEY, KEYRING, frame=HEADER).encode()
MULTIPART = b"".join(encrypt(KEY, plaintext_of(C + 7, i), part_number=i)[1] for i in (1, 2))
MULTIPART_ENVELOPE = Envelope.seal(KEY, KEYRING, multipart=True).encode()


# --- envelope -----------------------------------------------------------------------------


def _decode(text: str) -> Envelope | None:
    try:
        envelope = Envelope.decode(text)
    except CryptoError:
        return None
    assert Envelope.decode(envelope.encode()) == envelope
    return envelope


@fast(300)
@given(st.text(max_size=600))
@example("")
@example("v=1;k=k1;w=" + "A" * 5000)
@example("v=1;k=k1;w=AAAA;s=" + "9" * 5000)
def test_decode_random_text(text: str) -> None:
    _decode(text)


_field = st.tuples(
    st.sampled_from("vkwacpfsmxV"),
    st.one_of(
        st.text(alphabet="0123456789", max_size=25),
        st.text(alphabet="ABCDEFabcdef0123456789_-+/=", max_size=90),
    ),
).map(lambda kv: f"{kv[0]}={kv[1]}")


@fast(500)
@given(st.lists(_field, max_size=10).map(";".join))
def test_decode_structured_text(text: str) -> None:
    """Plausible field lists get past the tokenizer and exercise every field parser."""
    envelope = _decode(text)
    if envelope is not None:
        with contextlib.suppress(CryptoError):
            envelope.open(KEYRING)


@st.composite
def mutated(draw: st.DrawFn, original: str) -> str:
    text = original
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from("0129AZaz_-;=fsmpcakw+/ "))
        operation = draw(st.sampled_from(["replace", "insert", "delete", "drop field"]))
        if operation == "replace":
            text = text[:position] + char + text[position + 1 :]
        elif operation == "insert":
            text = text[:position] + char + text[position:]
        elif operation == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            fields = text.split(";")
            del fields[position % len(fields)]
            text = ";".join(fields)
    return text


@fast(800)
@given(st.one_of(mutated(ENVELOPE), mutated(MULTIPART_ENVELOPE)))
def test_mutated_envelopes(text: str) -> None:
    envelope = _decode(text)
    if envelope is None:
        return
    try:
        key = envelope.open(KEYRING)
    except CryptoError:
        return
    # A mutation that still unwraps cannot have changed the key or any bound parameter.
    assert key.material == KEY.material
    assert (key.algorithm, key.chunk_size) == (KEY.algorithm, KEY.chunk_size)
    body = MULTIPART if envelope.multipart else CIPHERTEXT
    decryptor = ObjectDecryptor(key, expected_frame=envelope.frame, multipart=envelope.multipart)
    try:
        out = decryptor.update(body) + decryptor.finalize()
    except CryptoError:
        assert envelope.frame is not None and envelope.frame != HEADER
        return
    check_pieces(out)


# --- frame header -------------------------------------------------------------------------


@fast(500)
@given(st.binary(min_size=HEADER_LENGTH, max_size=HEADER_LENGTH))
def test_parse_random_headers(raw: bytes) -> None:
    try:
        header = FrameHeader.parse(raw)
    except CryptoError:
        return
    assert header.pack() == raw


@fast(300)
@given(
    st.binary(min_size=16, max_size=16).map(lambda b: b"S3G1" + b[:4]),
    st.binary(min_size=40, max_size=40),
)
def test_parse_headers_with_valid_magic(prefix: bytes, rest: bytes) -> None:
    raw = prefix + rest[:40]
    try:
        header = FrameHeader.parse(raw)
    except CryptoError:
        return
    assert header.pack() == raw


@fast(100)
@given(st.binary(max_size=100).filter(lambda b: len(b) != HEADER_LENGTH))
def test_parse_wrong_length(raw: bytes) -> None:
    try:
        FrameHeader.parse(raw)
    except FormatError:
        return
    raise AssertionError("a header of the wrong length was accepted")


# --- bodies -------------------------------------------------------------------------------


def _decrypt_or_crypto_error(body: bytes, cuts: list[int], multipart: bool) -> bytes | None:
    decryptor = ObjectDecryptor(KEY, multipart=multipart)
    out: list[bytes] = []
    try:
        for piece in split(body, cuts):
            out += decryptor.update(piece)
        out += decryptor.finalize()
    except CryptoError:
        return None
    check_pieces(out)
    return b"".join(out)


@fast(600)
@given(
    st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=3000).map(lambda b: CIPHERTEXT[:HEADER_LENGTH] + b),
        st.binary(max_size=3000).map(lambda b: b"S3G1\x01\x0a\x00\x00" + b),
    ),
    st.lists(st.integers(0, 3100), max_size=6),
    st.booleans(),
)
def test_random_bodies(body: bytes, cuts: list[int], multipart: bool) -> None:
    assert _decrypt_or_crypto_error(body, cuts, multipart) is None


@st.composite
def mutated_body(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        length = draw(st.integers(1, 2 * C))
        operation = draw(
            st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate", "move"])
        )
        if operation == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "delete":
            del data[position : position + length]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "truncate":
            del data[position:]
        elif operation == "duplicate":
            data[position:position] = data[position : position + length]
        elif operation == "move":
            piece = data[position : position + length]
            del data[position : position + length]
            target = draw(st.integers(0, len(data)))
            data[target:target] = piece
    return bytes(data)


@fast(800)
@given(
    st.one_of(
        mutated_body(CIPHERTEXT).map(lambda b: (b, False)),
        mutated_body(MULTIPART).map(lambda b: (b, True)),
    ),
    st.lists(st.integers(0, 5000), max_size=6),
)
def test_mutated_bodies(case: tuple[bytes, bool], cuts: list[int]) -> None:
    body, multipart = case
    result = _decrypt_or_crypto_error(body, cuts, multipart)
    if result is not None:
        # Only a mutation that changed nothing (e.g. a move back into place) may decrypt.
        assert body == (MULTIPART if multipart else CIPHERTEXT)


@fast(400)
@given(mutated_body(CIPHERTEXT), st.data())
def test_mutated_range_slices(tampered: bytes, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, len(PLAINTEXT) - 1))
    last = data.draw(st.integers(first, len(PLAINTEXT) - 1))
    plan = plan_range(first, last, len(PLAINTEXT), C)
    sliced = tampered[plan.ciphertext_first : plan.ciphertext_last + 1]
    decryptor = RangeDecryptor(KEY, HEADER, plan)
    try:
        out = decryptor.update(sliced) + decryptor.finalize()
    except CryptoError:
        return
    check_pieces(out)
    assert sliced == CIPHERTEXT[plan.ciphertext_first : plan.ciphertext_last + 1]
    assert b"".join(out) == PLAINTEXT[first : last + 1]

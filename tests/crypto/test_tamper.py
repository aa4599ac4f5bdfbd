"""Tampering with stored objects: every case must fail with its specific error.

The object under test has 4 chunks of C = 1 KiB (the last one 500 bytes), so a
ciphertext looks like: header [0, 48) | chunk i at 48 + i * 1040, tag in its last 16 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from crypto import (
    DEFAULT_CHUNK_SIZE,
    Algorithm,
    AlgorithmNotAllowed,
    CommitmentMismatch,
    CryptoError,
    DataKey,
    Envelope,
    FormatError,
    FrameEncryptor,
    FrameHeader,
    IntegrityError,
    KeyUnwrapError,
    LengthMismatch,
    ObjectDecryptor,
    RangeDecryptor,
    StaticKeyring,
    TrailingDataError,
    TruncatedError,
    UnknownKeyId,
    plan_range,
)
from crypto.format import HEADER_LENGTH, MAX_CHUNKS_PER_FRAME, MAX_PART_NUMBER, FrameCipher
from crypto.pool import BufferPool
from tests.crypto.helpers import (
    STRIDE,
    C,
    chunk_offset,
    data_key,
    decrypt,
    encrypt,
    flip,
    plaintext_of,
    raises_exactly,
)

SIZE = 3 * C + 500
PLAINTEXT = plaintext_of(SIZE)
KEY = data_key()
HEADER, CIPHERTEXT = encrypt(KEY, PLAINTEXT)
CHUNKS = [CIPHERTEXT[chunk_offset(i) : chunk_offset(i + 1)] for i in range(4)]
KEK = bytes(range(100, 132))


def keyring(kek: bytes = KEK, key_id: str = "k1") -> StaticKeyring:
    return StaticKeyring({key_id: kek}, key_id)


def body(*chunks: bytes, header: bytes = CIPHERTEXT[:HEADER_LENGTH]) -> bytes:
    return header + b"".join(chunks)


def test_object_layout() -> None:
    assert len(CIPHERTEXT) == HEADER_LENGTH + SIZE + 4 * 16
    assert [len(c) for c in CHUNKS] == [STRIDE, STRIDE, STRIDE, 500 + 16]
    assert body(*CHUNKS) == CIPHERTEXT


# --- frame header -------------------------------------------------------------------------


def _header_value(ciphertext: bytes) -> tuple[int, int, int, int]:
    raw = ciphertext[:HEADER_LENGTH]
    return raw[4], raw[5], int.from_bytes(raw[6:8]), int.from_bytes(raw[24:32])


def expected_without_envelope(ciphertext: bytes) -> type[CryptoError]:
    """What the code raises for a header with one flipped bit, checked in this order:
    parse (magic, chunk size range, part range, algorithm id, chunk count), then the
    header against the data key (algorithm, chunk size, part number 0), then the
    key commitment over salt, length and commitment."""
    alg, log2, part, length = _header_value(ciphertext)
    if ciphertext[:4] != b"S3G1" or not 10 <= log2 <= 24 or part > MAX_PART_NUMBER:
        return FormatError
    if alg not in (1, 2):
        return AlgorithmNotAllowed
    if -(-length // (1 << log2)) > MAX_CHUNKS_PER_FRAME:
        return FormatError
    if alg != 1 or log2 != 10 or part != 0:
        return IntegrityError
    return CommitmentMismatch


def expected_with_envelope(ciphertext: bytes) -> type[CryptoError]:
    """With the envelope's frame description, a parsed header that differs is rejected
    as not belonging to the envelope before the commitment is computed."""
    without = expected_without_envelope(ciphertext)
    return IntegrityError if without is CommitmentMismatch else without


HEADER_REGIONS = {
    "magic": range(0, 4),
    "algorithm": range(4, 5),
    "chunk size": range(5, 6),
    "part number": range(6, 8),
    "salt": range(8, 24),
    "length": range(24, 32),
    "commitment": range(32, 48),
}


@pytest.mark.parametrize("with_envelope", [False, True], ids=["body-only", "envelope-frame"])
@pytest.mark.parametrize("region", HEADER_REGIONS)
def test_header_bit_flips(region: str, with_envelope: bool) -> None:
    expected = expected_with_envelope if with_envelope else expected_without_envelope
    seen: set[str] = set()
    for byte in HEADER_REGIONS[region]:
        for bit in range(byte * 8, byte * 8 + 8):
            tampered = flip(CIPHERTEXT, bit)
            frame = HEADER if with_envelope else None
            raises_exactly(
                expected(tampered), partial(decrypt, KEY, tampered, expected_frame=frame)
            )
            seen.add(expected(tampered).__name__)
    # Pin which errors each region can produce, so a changed check order is noticed.
    possible = {
        "magic": {"FormatError"},
        "algorithm": {"AlgorithmNotAllowed"},
        "chunk size": {"FormatError", "IntegrityError"},
        "part number": {"FormatError", "IntegrityError"},
        "salt": {"IntegrityError" if with_envelope else "CommitmentMismatch"},
        "length": {"FormatError", "IntegrityError" if with_envelope else "CommitmentMismatch"},
        "commitment": {"IntegrityError" if with_envelope else "CommitmentMismatch"},
    }
    assert seen == possible[region]


def test_header_switched_to_the_other_algorithm() -> None:
    tampered = bytearray(CIPHERTEXT)
    tampered[4] = Algorithm.CHACHA20_POLY1305
    raises_exactly(IntegrityError, lambda: decrypt(KEY, bytes(tampered)))


def test_commitment_catches_a_wrong_data_key_before_any_chunk() -> None:
    decryptor = ObjectDecryptor(data_key(seed=99))
    raises_exactly(CommitmentMismatch, lambda: decryptor.update(CIPHERTEXT[:HEADER_LENGTH]))
    assert decryptor.failed


# --- chunks -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("where", ["first body byte", "last body byte", "tag"])
def test_chunk_bit_flip(index: int, where: str) -> None:
    start, end = chunk_offset(index), chunk_offset(index) + len(CHUNKS[index])
    byte = {"first body byte": start, "last body byte": end - 17, "tag": end - 5}[where]
    tampered = flip(CIPHERTEXT, byte * 8 + 3)
    raises_exactly(IntegrityError, lambda: decrypt(KEY, tampered))


def test_only_authenticated_chunks_are_released() -> None:
    tampered = flip(CIPHERTEXT, chunk_offset(2) * 8)
    decryptor = ObjectDecryptor(KEY)
    out: list[bytes] = []
    with pytest.raises(IntegrityError):
        for i in range(0, len(tampered), 100):
            out += decryptor.update(tampered[i : i + 100])
    assert b"".join(out) == PLAINTEXT[: 2 * C]
    assert decryptor.failed
    raises_exactly(IntegrityError, lambda: decryptor.update(b"more"))


@pytest.mark.parametrize(
    ("name", "chunks"),
    [
        ("swap 0 and 1", [CHUNKS[1], CHUNKS[0], CHUNKS[2], CHUNKS[3]]),
        ("swap 1 and 2", [CHUNKS[0], CHUNKS[2], CHUNKS[1], CHUNKS[3]]),
        ("duplicate 0", [CHUNKS[0], CHUNKS[0], CHUNKS[1], CHUNKS[2], CHUNKS[3]]),
        ("duplicate 2", [CHUNKS[0], CHUNKS[1], CHUNKS[2], CHUNKS[2], CHUNKS[3]]),
        ("drop 1", [CHUNKS[0], CHUNKS[2], CHUNKS[3]]),
        ("final chunk moved up", [CHUNKS[0], CHUNKS[3], CHUNKS[1], CHUNKS[2]]),
    ],
)
def test_reordered_chunks(name: str, chunks: list[bytes]) -> None:
    raises_exactly(IntegrityError, lambda: decrypt(KEY, body(*chunks)))


def test_dropping_the_middle_chunks_is_truncation() -> None:
    # The short final chunk cannot fill chunk 1's slot, so the stream just ends early.
    raises_exactly(TruncatedError, lambda: decrypt(KEY, body(CHUNKS[0], CHUNKS[3])))


@pytest.mark.parametrize(
    "cut",
    [
        0,
        20,  # inside the header
        HEADER_LENGTH,  # at chunk boundaries
        chunk_offset(1),
        chunk_offset(3),
        chunk_offset(1) + 100,  # mid-chunk
        len(CIPHERTEXT) - 16,  # the final chunk's tag
        len(CIPHERTEXT) - 1,
    ],
)
def test_truncation(cut: int) -> None:
    raises_exactly(TruncatedError, lambda: decrypt(KEY, CIPHERTEXT[:cut]))


def test_truncated_empty_object() -> None:
    _, empty = encrypt(KEY, b"")
    assert decrypt(KEY, empty) == b""
    raises_exactly(TruncatedError, lambda: decrypt(KEY, empty[:HEADER_LENGTH]))


def test_final_flag_is_bound_into_the_nonce() -> None:
    """Defence in depth: a non-final chunk does not open as a final one. (Through the
    public API the committed plaintext length already fixes which chunk is final.)"""
    cipher = FrameCipher.open_frame(KEY.material, HEADER)
    assert cipher.decrypt_chunk(1, CHUNKS[1]) == PLAINTEXT[C : 2 * C]
    cipher._last_index = 1  # pretend the frame ends after chunk 1
    raises_exactly(IntegrityError, lambda: cipher.decrypt_chunk(1, CHUNKS[1]))


@pytest.mark.parametrize(
    "extra", [b"\x00", CHUNKS[3], CIPHERTEXT], ids=["one byte", "final chunk again", "whole frame"]
)
def test_appended_data(extra: bytes) -> None:
    raises_exactly(TrailingDataError, lambda: decrypt(KEY, CIPHERTEXT + extra))
    # The same when the extra bytes arrive in a later read.
    raises_exactly(
        TrailingDataError, lambda: decrypt(KEY, CIPHERTEXT + extra, pieces=[CIPHERTEXT, extra])
    )


@pytest.mark.parametrize("same_key", [True, False], ids=["same data key", "other data key"])
def test_chunk_from_another_object(same_key: bool) -> None:
    other_key = KEY if same_key else data_key(seed=7)
    _, other = encrypt(other_key, PLAINTEXT)  # same plaintext and key, fresh salt
    moved = other[chunk_offset(1) : chunk_offset(2)]
    raises_exactly(
        IntegrityError, lambda: decrypt(KEY, body(CHUNKS[0], moved, CHUNKS[2], CHUNKS[3]))
    )


def test_body_of_another_object_with_same_data_key_fails_the_envelope_check() -> None:
    other_header, other = encrypt(KEY, PLAINTEXT)
    assert decrypt(KEY, other, expected_frame=other_header) == PLAINTEXT
    raises_exactly(IntegrityError, lambda: decrypt(KEY, other, expected_frame=HEADER))


# --- envelope -----------------------------------------------------------------------------


def sealed(key: DataKey = KEY, **kwargs: object) -> str:
    return Envelope.seal(key, keyring(), **kwargs).encode()  # type: ignore[arg-type]


def test_wrong_kek_with_the_same_key_id() -> None:
    envelope = Envelope.decode(sealed(frame=HEADER))
    raises_exactly(KeyUnwrapError, lambda: envelope.open(keyring(kek=bytes(32))))


def test_unknown_key_id() -> None:
    envelope = Envelope.decode(sealed(frame=HEADER))
    raises_exactly(UnknownKeyId, lambda: envelope.open(keyring(key_id="k2")))


def test_key_id_is_bound_into_the_wrap() -> None:
    both = StaticKeyring({"k1": KEK, "k2": KEK}, "k1")  # same KEK under two ids
    text = Envelope.seal(KEY, both, frame=HEADER).encode()
    raises_exactly(KeyUnwrapError, lambda: Envelope.decode(text.replace("k=k1", "k=k2")).open(both))


def test_tampered_wrapped_key() -> None:
    envelope = Envelope.decode(sealed(frame=HEADER))
    for bit in range(0, len(envelope.wrapped_key) * 8, 7):
        tampered = Envelope(envelope.key_id, flip(envelope.wrapped_key, bit), frame=HEADER)
        raises_exactly(KeyUnwrapError, partial(tampered.open, keyring()))


CHACHA = data_key(Algorithm.CHACHA20_POLY1305)
DEFAULTS = data_key(chunk_size=DEFAULT_CHUNK_SIZE)  # no a= and no c= field in its envelope


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        (DEFAULTS, lambda s: s + ";a=2"),  # claim ChaCha20 for an AES key
        (CHACHA, lambda s: s.replace(";a=2", "")),  # downgrade to the default algorithm
        (CHACHA, lambda s: s.replace(";a=2", ";a=1")),
        (DEFAULTS, lambda s: s + ";c=12"),  # other chunk size
        (KEY, lambda s: s.replace(";c=10", "")),  # back to the default 64 KiB
        (KEY, lambda s: s.replace(";c=10", ";c=11")),
        (KEY, lambda s: s + ";p=1"),  # claim multipart
    ],
    ids=["add a", "drop a", "a=1", "add c", "drop c", "c=11", "add p"],
)
def test_envelope_parameter_edits_break_the_unwrap(
    key: DataKey, edit: Callable[[str], str]
) -> None:
    original = sealed(key)
    tampered = edit(original)
    assert tampered != original
    assert Envelope.decode(original).open(keyring()).material == key.material
    raises_exactly(KeyUnwrapError, lambda: Envelope.decode(tampered).open(keyring()))


def test_multipart_flag_removed() -> None:
    original = Envelope.seal(KEY, keyring(), multipart=True).encode()
    assert ";p=1" in original
    raises_exactly(
        KeyUnwrapError, lambda: Envelope.decode(original.replace(";p=1", "")).open(keyring())
    )


def test_multipart_flag_with_frame_fields_is_malformed() -> None:
    raises_exactly(FormatError, lambda: Envelope.decode(sealed(frame=HEADER) + ";p=1"))


def test_unsupported_envelope_version() -> None:
    raises_exactly(FormatError, lambda: Envelope.decode(sealed().replace("v=1", "v=2")))


def _edit_field(text: str, name: str, value: str) -> str:
    fields = dict(part.split("=", 1) for part in text.split(";"))
    assert fields[name] != value
    fields[name] = value
    return ";".join(f"{k}={v}" for k, v in fields.items())


FRAME_EDITS = {
    "s": str(SIZE + 1),
    "f": "A" * 22,
    "m": "A" * 22,
}


@pytest.mark.parametrize("field", FRAME_EDITS)
def test_envelope_frame_fields_must_match_the_body(field: str) -> None:
    tampered = Envelope.decode(_edit_field(sealed(frame=HEADER), field, FRAME_EDITS[field]))
    key = tampered.open(keyring())  # frame fields are not in the wrap context...
    assert tampered.frame is not None
    # ...but a full GET compares them with the body header,
    raises_exactly(IntegrityError, lambda: decrypt(key, CIPHERTEXT, expected_frame=tampered.frame))
    # and a ranged GET, which trusts them instead of fetching the header, checks the commitment.
    plan = plan_range(0, 10, tampered.frame.plaintext_length, C)
    raises_exactly(CommitmentMismatch, lambda: RangeDecryptor(key, tampered.frame, plan))  # type: ignore[arg-type]


def test_envelope_without_frame_fields_still_decrypts() -> None:
    """The frame fields are an optimisation for ranged GETs; the body header is authoritative."""
    text = sealed(frame=HEADER)
    stripped = ";".join(p for p in text.split(";") if p[0] not in "fsm")
    envelope = Envelope.decode(stripped)
    assert envelope.frame is None
    assert decrypt(envelope.open(keyring()), CIPHERTEXT) == PLAINTEXT


# --- multipart ----------------------------------------------------------------------------

PARTS = [plaintext_of(2 * C, seed=1), plaintext_of(C + 3, seed=2), plaintext_of(5, seed=3)]
FRAMES = [encrypt(KEY, p, part_number=i)[1] for i, p in enumerate(PARTS, start=1)]


def test_multipart_round_trip() -> None:
    assert decrypt(KEY, b"".join(FRAMES), multipart=True) == b"".join(PARTS)


@pytest.mark.parametrize(
    "order",
    [[1, 0, 2], [0, 2, 1], [0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2, 2]],
    ids=["swap 1-2", "swap 2-3", "duplicate first", "duplicate middle", "duplicate last"],
)
def test_multipart_frames_reordered_or_duplicated(order: list[int]) -> None:
    body_ = b"".join(FRAMES[i] for i in order)
    raises_exactly(IntegrityError, lambda: decrypt(KEY, body_, multipart=True))


def test_single_part_frame_in_a_multipart_object() -> None:
    raises_exactly(IntegrityError, lambda: decrypt(KEY, FRAMES[0] + CIPHERTEXT, multipart=True))


def test_part_frame_in_a_single_part_object() -> None:
    raises_exactly(IntegrityError, lambda: decrypt(KEY, FRAMES[0]))


def test_multipart_truncated_inside_a_frame() -> None:
    body_ = b"".join(FRAMES)
    for cut in (len(FRAMES[0]) + 10, len(FRAMES[0]) + HEADER_LENGTH + 5, len(body_) - 1):
        raises_exactly(TruncatedError, partial(decrypt, KEY, body_[:cut], multipart=True))


def test_multipart_trailing_garbage() -> None:
    body_ = b"".join(FRAMES)
    raises_exactly(TruncatedError, lambda: decrypt(KEY, body_ + b"x" * 10, multipart=True))
    raises_exactly(FormatError, lambda: decrypt(KEY, body_ + b"x" * 100, multipart=True))


# --- encryptor length ---------------------------------------------------------------------


def test_encryptor_given_too_many_bytes() -> None:
    pool = BufferPool(C)
    encryptor = FrameEncryptor(KEY, 10, pool=pool)
    encryptor.update(b"x" * 6)
    raises_exactly(LengthMismatch, lambda: encryptor.update(b"x" * 5))
    assert pool.stats().in_use == 0
    raises_exactly(LengthMismatch, lambda: encryptor.update(b"x"))


def test_encryptor_given_too_few_bytes() -> None:
    pool = BufferPool(C)
    encryptor = FrameEncryptor(KEY, 2 * C, pool=pool)
    encryptor.update(b"x" * (2 * C - 1))
    raises_exactly(LengthMismatch, encryptor.finalize)
    assert pool.stats().in_use == 0


def test_encryptor_finalized_twice() -> None:
    encryptor = FrameEncryptor(KEY, 0)
    assert len(b"".join(encryptor.finalize())) == HEADER_LENGTH + 16
    raises_exactly(LengthMismatch, encryptor.finalize)


# --- ranged decryption --------------------------------------------------------------------


def _ranged(ciphertext: bytes, first: int, last: int, header: FrameHeader = HEADER) -> bytes:
    plan = plan_range(first, last, SIZE, C)
    decryptor = RangeDecryptor(KEY, header, plan)
    sliced = ciphertext[plan.ciphertext_first : plan.ciphertext_last + 1]
    return b"".join(decryptor.update(sliced) + decryptor.finalize())


def test_range_decryptor_with_a_tampered_chunk() -> None:
    assert _ranged(CIPHERTEXT, C + 5, 2 * C + 5) == PLAINTEXT[C + 5 : 2 * C + 6]
    tampered = flip(CIPHERTEXT, (chunk_offset(2) + 3) * 8)
    raises_exactly(IntegrityError, lambda: _ranged(tampered, C + 5, 2 * C + 5))
    # Chunks outside the range are not read, so tampering there goes unnoticed by design.
    assert _ranged(tampered, 0, 10) == PLAINTEXT[:11]


def test_range_decryptor_with_swapped_chunks() -> None:
    swapped = body(CHUNKS[0], CHUNKS[2], CHUNKS[1], CHUNKS[3])
    raises_exactly(IntegrityError, lambda: _ranged(swapped, C, C + 1))


def test_range_decryptor_input_length() -> None:
    plan = plan_range(0, C - 1, SIZE, C)
    sliced = CIPHERTEXT[plan.ciphertext_first : plan.ciphertext_last + 1]
    decryptor = RangeDecryptor(KEY, HEADER, plan)
    raises_exactly(TrailingDataError, lambda: decryptor.update(sliced + b"x"))
    decryptor = RangeDecryptor(KEY, HEADER, plan)
    decryptor.update(sliced[:-1])
    raises_exactly(TruncatedError, decryptor.finalize)


def test_range_decryptor_rejects_a_header_for_another_key() -> None:
    plan = plan_range(0, 0, SIZE, C)
    raises_exactly(FormatError, lambda: RangeDecryptor(CHACHA, HEADER, plan))
    pool = BufferPool(C + 16)
    raises_exactly(
        CommitmentMismatch, lambda: RangeDecryptor(data_key(seed=5), HEADER, plan, pool=pool)
    )
    assert pool.stats().in_use == 0

"""Property tests: streaming round trips, multipart frames and ranged decryption."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import (
    Algorithm,
    FrameEncryptor,
    ObjectDecryptor,
    RangeDecryptor,
    ciphertext_length,
    plan_range,
)
from crypto.pool import BufferPool
from tests.crypto.helpers import (
    ALGORITHMS,
    C,
    check_pieces,
    data_key,
    decrypt,
    encrypt,
    fast,
    pieces_of,
    plaintext_of,
    split,
)

# The edges of the chunk arithmetic, plus arbitrary sizes up to a dozen chunks.
sizes = st.one_of(
    st.sampled_from([0, 1, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, 7 * C]),
    st.integers(0, 12 * C),
)
algorithms = st.sampled_from(ALGORITHMS)
chunk_sizes = st.sampled_from([1024, 2048])


@fast(400)
@given(size=sizes, algorithm=algorithms, chunk=chunk_sizes, data=st.data())
def test_round_trip_with_arbitrary_input_splits(
    size: int, algorithm: Algorithm, chunk: int, data: st.DataObject
) -> None:
    key = data_key(algorithm, chunk)
    plaintext = plaintext_of(size)
    header, ciphertext = encrypt(key, plaintext, pieces=data.draw(pieces_of(plaintext)))
    assert len(ciphertext) == ciphertext_length(size, chunk)
    assert header.plaintext_length == size and header.algorithm is algorithm
    assert decrypt(key, ciphertext, pieces=data.draw(pieces_of(ciphertext))) == plaintext
    assert decrypt(key, ciphertext, pieces=[ciphertext], expected_frame=header) == plaintext


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 40 * C + 5])
@pytest.mark.parametrize("piece", [1, 15, C - 1, C + 16, 10**6])
def test_round_trip_fixed_pieces(algorithm: Algorithm, size: int, piece: int) -> None:
    key = data_key(algorithm)
    plaintext = plaintext_of(size)
    _, ciphertext = encrypt(key, plaintext, pieces=split(plaintext, range(0, size, piece)))
    # bytes, bytearray and memoryview inputs are all accepted.
    decrypted = decrypt(
        key,
        ciphertext,
        pieces=[bytearray(p) for p in split(ciphertext, range(0, len(ciphertext), piece))],
    )
    assert decrypted == plaintext


def test_two_encryptions_differ() -> None:
    """Every frame has a fresh salt, so the same plaintext never encrypts the same way."""
    key = data_key()
    plaintext = plaintext_of(3 * C)
    first, second = encrypt(key, plaintext)[1], encrypt(key, plaintext)[1]
    assert first != second and len(first) == len(second)


@fast(250)
@given(
    parts=st.lists(st.integers(0, 4 * C), min_size=1, max_size=5),
    algorithm=algorithms,
    data=st.data(),
)
def test_multipart_frames_concatenate(
    parts: list[int], algorithm: Algorithm, data: st.DataObject
) -> None:
    key = data_key(algorithm)
    plaintexts = [plaintext_of(n, seed=i) for i, n in enumerate(parts)]
    body = b"".join(
        encrypt(key, p, part_number=i, pieces=data.draw(pieces_of(p)))[1]
        for i, p in enumerate(plaintexts, start=1)
    )
    assert len(body) == sum(ciphertext_length(n, C) for n in parts)
    decryptor = ObjectDecryptor(key, multipart=True)
    out: list[bytes] = []
    for piece in data.draw(pieces_of(body)):
        out += decryptor.update(piece)
    out += decryptor.finalize()
    check_pieces(out)
    assert b"".join(out) == b"".join(plaintexts)
    assert decryptor.plaintext_length == sum(parts)


@fast(400)
@given(size=st.integers(1, 12 * C), algorithm=algorithms, data=st.data())
def test_ranged_decrypt_equals_plaintext_slice(
    size: int, algorithm: Algorithm, data: st.DataObject
) -> None:
    key = data_key(algorithm)
    plaintext = plaintext_of(size)
    header, ciphertext = encrypt(key, plaintext)
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    plan = plan_range(first, last, size, C)
    sliced = ciphertext[plan.ciphertext_first : plan.ciphertext_last + 1]
    assert len(sliced) == plan.ciphertext_length
    decryptor = RangeDecryptor(key, header, plan)
    out: list[bytes] = []
    for piece in data.draw(pieces_of(sliced)):
        out += decryptor.update(piece)
    out += decryptor.finalize()
    check_pieces(out)
    assert b"".join(out) == plaintext[first : last + 1]


def test_encryptor_output_is_independent_of_the_input_buffer() -> None:
    """Output must not alias the caller's buffer or the pooled staging buffer."""
    key = data_key()
    pool = BufferPool(C)
    source = bytearray(plaintext_of(3 * C + 5))
    encryptor = FrameEncryptor(key, len(source), pool=pool)
    out = encryptor.update(memoryview(source)[: C + 3]) + encryptor.update(source[C + 3 :])
    out += encryptor.finalize()
    check_pieces(out)
    snapshot = [bytes(bytearray(p)) for p in out]
    source[:] = bytes(len(source))  # scribble over the input and reuse the staging buffer
    reused = pool.acquire()
    reused[:] = b"\xff" * C
    assert out == snapshot
    assert decrypt(key, b"".join(out)) == plaintext_of(3 * C + 5)


@pytest.mark.parametrize("multipart", [False, True])
def test_caller_may_close_the_data_key_once_the_decryptor_exists(multipart: bool) -> None:
    """Frame keys are derived when each frame header arrives, after the caller is done
    with its DataKey; the decryptor keeps its own copy and wipes it when it ends."""
    key = data_key()
    parts = [plaintext_of(C + 1, seed=1), plaintext_of(5, seed=2)]
    if multipart:
        body = b"".join(encrypt(key, p, part_number=i)[1] for i, p in enumerate(parts, 1))
    else:
        parts = parts[:1]
        body = encrypt(key, parts[0])[1]
    caller_key = data_key()
    decryptor = ObjectDecryptor(caller_key, multipart=multipart)
    caller_key.close()
    own_copy = decryptor._data_key.material
    out = decryptor.update(body) + decryptor.finalize()
    assert b"".join(out) == b"".join(parts)
    assert own_copy == bytearray(32)


def test_range_decryptor_wipes_its_key_copy() -> None:
    key = data_key()
    header, ciphertext = encrypt(key, plaintext_of(3 * C))
    plan = plan_range(C, C + 10, 3 * C, C)
    decryptor = RangeDecryptor(key, header, plan)
    key.close()
    own_copy = decryptor._data_key.material
    sliced = ciphertext[plan.ciphertext_first : plan.ciphertext_last + 1]
    assert (
        b"".join(decryptor.update(sliced) + decryptor.finalize()) == plaintext_of(3 * C)[C : C + 11]
    )
    assert own_copy == bytearray(32)

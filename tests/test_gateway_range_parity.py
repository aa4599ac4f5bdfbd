"""Ranged GETs through the gateway answer exactly as Amazon S3 does on plaintext.

The same plaintext is stored twice: unencrypted directly on the backend, and
encrypted through the gateway. Every range case is sent as raw HTTP (so the
exact ``Range`` header reaches the server) to the backend for the plaintext
object and to the gateway for the encrypted one (and, as a third column, to
the gateway for the unencrypted object: legacy objects are served too).

Which side the gateway is held to: Amazon S3's behaviour, written out in
``aws_range_answer`` (and the cases' ``expect``). Where the direct backend
already answers like that, the comparison with S3 is a comparison with the
backend; where the backend deviates from S3 the deviation must be listed in
``BACKEND_DEVIATIONS`` (with the reason) and the gateway is still held to S3's
answer, because clients are written against S3, not against the storage
behind the gateway. Where the gateway itself falls short, ``GATEWAY_GAPS``
names the case and why (strict expected failures).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree

import pytest

from tests.harness import CHUNK_SIZE, GATEWAY_USER, Backend, Credentials, Gateway, make_bucket
from tests.rawclient import RawResponse, signed_request

C = CHUNK_SIZE
# 2 * C + 40: its last bytes lie before where an encrypted object's third chunk would
# start, so the gateway's chunk-aligned backend range is past the end of the
# unencrypted object (a 416 from the backend, answered with the bytes read apart).
SIZES = [0, 1, 64 * 1024, 2 * C + 40, 3 * C + 1234]


# --------------------------------------------------------------------------- S3's answers


@dataclass(frozen=True)
class Answer:
    """What a client observes: status, Content-Range, Content-Length and body.

    For errors the body is the S3 error code and the length is not compared
    (error documents carry request ids).
    """

    status: int
    content_range: str | None
    content_length: int | None
    body: bytes

    def describe(self) -> str:
        body = self.body if self.status >= 300 else f"<{len(self.body)} bytes>"
        return (
            f"{self.status} Content-Range={self.content_range}"
            f" Content-Length={self.content_length} body={body!r}"
        )


def observed(response: RawResponse) -> Answer:
    if response.status >= 300:
        return Answer(response.status, response.headers.get("content-range"), None, _code(response))
    length = response.headers.get("content-length")
    return Answer(
        response.status,
        response.headers.get("content-range"),
        int(length) if length is not None else None,
        response.body,
    )


def _code(response: RawResponse) -> bytes:
    try:
        return (ElementTree.fromstring(response.body).findtext("Code") or "").encode()
    except ElementTree.ParseError:
        return b"<not an S3 error document>"


def whole(data: bytes) -> Answer:
    return Answer(200, None, len(data), data)


def partial(data: bytes, first: int, last: int) -> Answer:
    piece = data[first : last + 1]
    return Answer(206, f"bytes {first}-{last}/{len(data)}", len(piece), piece)


def unsatisfiable(size: int) -> Answer:
    # RFC 9110 section 15.5.17: a 416 names the current length in Content-Range.
    return Answer(416, f"bytes */{size}", None, b"InvalidRange")


_BYTES_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def aws_range_answer(header: str, data: bytes) -> Answer:
    """GetObject with one ``Range`` header, as Amazon S3 answers it.

    - Only one ``bytes=`` range is served. Several ranges, other units, syntax
      errors and ``last < first`` are ignored: 200 with the whole object.
    - A start at or past the end, or a zero suffix, is unsatisfiable: 416.
    - An end past the end, or a suffix longer than the object, is clamped.
    - A non-empty suffix on an empty object: 200 with the (empty) object. The
      only range form RFC 9110 counts as satisfiable on an empty
      representation; S3 serves it whole.
    """
    size = len(data)
    match = _BYTES_RANGE.fullmatch(header)
    if match is None or not (match[1] or match[2]):
        return whole(data)
    if not match[1]:
        suffix = int(match[2])
        if suffix == 0:
            return unsatisfiable(size)
        if size == 0:
            return whole(data)
        return partial(data, max(0, size - suffix), size - 1)
    first = int(match[1])
    last = int(match[2]) if match[2] else None
    if last is not None and last < first:
        return whole(data)
    if first >= size:
        return unsatisfiable(size)
    return partial(data, first, size - 1 if last is None else min(last, size - 1))


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    applies: Callable[[int], bool]
    range: Callable[[int], str] | None = None  # the Range header for an object of this size
    query: str = ""
    if_range: str | None = None  # "match" (the object's own ETag) or "mismatch"
    expect: Callable[[int, bytes], Answer] | None = None  # S3's answer, when not from range


def _partial_whole(size: int, data: bytes) -> Answer:
    # GetObject?partNumber=1 of an object uploaded in one piece: the whole object,
    # but as a 206 with its Content-Range (as S3 answers; see moto's partNumber support).
    return partial(data, 0, size - 1)


def _if_range_mismatch(size: int, data: bytes) -> Answer:
    return whole(data)  # a stale validator: the whole current object, 200


def _chunk_aligned(size: int) -> str:
    k = 1 if size >= 2 * C else 0
    return f"bytes={k * C}-{(k + 1) * C - 1}"


ALWAYS: Callable[[int], bool] = lambda size: True  # noqa: E731
NON_EMPTY: Callable[[int], bool] = lambda size: size > 0  # noqa: E731

CASES = [
    Case("first-byte", NON_EMPTY, lambda s: "bytes=0-0"),
    Case("last-byte", NON_EMPTY, lambda s: f"bytes={s - 1}-{s - 1}"),
    Case("within-chunk", lambda s: s > 300, lambda s: "bytes=100-299"),
    Case("across-one-boundary", lambda s: s > C + 10, lambda s: f"bytes={C - 10}-{C + 9}"),
    Case("across-two-boundaries", lambda s: s > 2 * C + 1, lambda s: f"bytes={C - 1}-{2 * C}"),
    Case("chunk-aligned", lambda s: s >= C, _chunk_aligned),
    Case("final-partial-chunk", lambda s: s > 3 * C, lambda s: f"bytes={3 * C}-{s - 1}"),
    # Of an unencrypted object, bytes the backend range for an encrypted one skips
    # (covering_range): all of them read apart.
    Case(
        "early-in-a-chunk", lambda s: s > 3 * C + 100, lambda s: f"bytes={3 * C + 10}-{3 * C + 20}"
    ),
    Case("open-from-middle", NON_EMPTY, lambda s: f"bytes={s // 2}-"),
    Case("open-from-zero", ALWAYS, lambda s: "bytes=0-"),
    Case("suffix-small", ALWAYS, lambda s: "bytes=-10"),
    Case("suffix-exact-size", NON_EMPTY, lambda s: f"bytes=-{s}"),
    Case("suffix-larger-than-size", ALWAYS, lambda s: f"bytes=-{s + 5}"),
    Case("suffix-zero", ALWAYS, lambda s: "bytes=-0"),
    Case("end-past-eof", NON_EMPTY, lambda s: f"bytes={max(s - 5, 0)}-{s + 1000}"),
    Case("start-at-eof", ALWAYS, lambda s: f"bytes={s}-"),
    Case("start-past-eof", ALWAYS, lambda s: f"bytes={s + 10}-{s + 20}"),
    # Past the end of the stored ciphertext as well, so the backend refuses it itself.
    Case("start-past-stored-end", ALWAYS, lambda s: f"bytes={s + 4 * C}-"),
    Case("multiple-ranges", ALWAYS, lambda s: "bytes=0-1,5-6"),
    Case("other-unit", ALWAYS, lambda s: "items=0-1"),
    Case("garbage", ALWAYS, lambda s: "garbage"),
    Case("last-before-first", ALWAYS, lambda s: "bytes=5-2"),
    Case("if-range-match", NON_EMPTY, lambda s: "bytes=0-0", if_range="match"),
    Case(
        "if-range-mismatch",
        NON_EMPTY,
        lambda s: "bytes=0-0",
        if_range="mismatch",
        expect=_if_range_mismatch,
    ),
    # Empty objects are left out: what S3 answers to partNumber=1 of an empty
    # object is not documented and no answer with a Content-Range is valid for it.
    Case("part-number-1", NON_EMPTY, query="partNumber=1", expect=_partial_whole),
]

# Where a test backend answers otherwise than S3 (the gateway is held to S3 there).
# Both backends also leave out Content-Range on 416; that header is not compared
# with the backend (see _agrees_with_s3) but the gateway must send it.
_RCLONE_200_FOR_RANGES = "rclone answers ranged reads with 200 (and a correct Content-Range)"
_RCLONE_REFUSES_IGNORED_RANGES = "rclone answers 416 (or 501) to ranges S3 ignores"
BACKEND_DEVIATIONS: dict[tuple[str, str], str] = {
    **{
        ("rclone", case): _RCLONE_200_FOR_RANGES
        for case in [
            "first-byte",
            "last-byte",
            "within-chunk",
            "across-one-boundary",
            "across-two-boundaries",
            "chunk-aligned",
            "final-partial-chunk",
            "early-in-a-chunk",
            "open-from-middle",
            "open-from-zero",
            "suffix-exact-size",
            "end-past-eof",
            "if-range-match",
        ]
    },
    ("rclone", "suffix-small"): _RCLONE_200_FOR_RANGES + "; 416 for any suffix of an empty object",
    ("rclone", "suffix-larger-than-size"): (
        "rclone answers 416 where S3 clamps the suffix (or serves the empty object)"
    ),
    ("rclone", "multiple-ranges"): _RCLONE_REFUSES_IGNORED_RANGES,
    ("rclone", "other-unit"): _RCLONE_REFUSES_IGNORED_RANGES,
    ("rclone", "garbage"): _RCLONE_REFUSES_IGNORED_RANGES,
    ("rclone", "last-before-first"): _RCLONE_REFUSES_IGNORED_RANGES,
    ("rclone", "part-number-1"): "rclone ignores partNumber (200 without Content-Range)",
    ("rclone", "if-range-mismatch"): "rclone ignores If-Range",
    ("moto", "if-range-mismatch"): "moto ignores If-Range",
    ("moto", "other-unit"): "moto serves other units as if they were bytes",
    ("moto", "garbage"): "moto answers 500 to an unparsable Range",
    ("moto", "last-before-first"): "moto answers 416 when the start is past the end",
}

# Where the gateway does not answer as S3 yet: expected failures (strict, so a fix
# shows up as XPASS and the entry must go).
GATEWAY_GAPS: dict[tuple[str, str], str] = {
    ("rclone", "part-number-1"): (
        "rclone ignores partNumber and answers 200 without Content-Range; the gateway"
        " passes that on instead of S3's 206 for part 1 of a single-part object"
    ),
}


def expect_gap(request: pytest.FixtureRequest, backend: Backend, case: Case) -> None:
    reason = GATEWAY_GAPS.get((backend.name, case.id))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def _params() -> list[object]:
    params: list[object] = []
    for size in SIZES:
        for case in CASES:
            if case.applies(size):
                params.append(pytest.param(size, case, id=f"{size}B-{case.id}"))
    return params


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class StoredPair:
    bucket: str
    data: bytes
    plain_key: str  # stored directly on the backend
    encrypted_key: str  # stored through the gateway


@pytest.fixture(scope="module")
def pair_cache() -> dict[tuple[str, int], StoredPair]:
    return {}


def stored_pair(
    pairs: dict[tuple[str, int], StoredPair], backend: Backend, gateway: Gateway, size: int
) -> StoredPair:
    """The plaintext of ``size`` bytes stored both ways (once per backend and size)."""
    key = (backend.endpoint_url, size)
    if key not in pairs:
        bucket = make_bucket(backend, prefix="parity")
        data = os.urandom(size)
        backend.client().put_object(Bucket=bucket, Key="plain", Body=data)
        gateway.client().put_object(Bucket=bucket, Key="encrypted", Body=data)
        pairs[key] = StoredPair(bucket, data, "plain", "encrypted")
    return pairs[key]


def etag(endpoint: str, credentials: Credentials, bucket: str, key: str) -> str:
    response = signed_request(endpoint, credentials, "HEAD", f"/{bucket}/{key}")
    assert response.status == 200, response
    return response.headers["etag"]


def ranged_get(
    endpoint: str, credentials: Credentials, bucket: str, key: str, case: Case, size: int
) -> Answer:
    headers: list[tuple[str, str]] = []
    if case.range is not None:
        headers.append(("Range", case.range(size)))
    if case.if_range == "match":
        headers.append(("If-Range", etag(endpoint, credentials, bucket, key)))
    elif case.if_range == "mismatch":
        headers.append(("If-Range", '"0123456789abcdef0123456789abcdef"'))
    path = f"/{bucket}/{key}" + (f"?{case.query}" if case.query else "")
    response = signed_request(endpoint, credentials, "GET", path, headers=headers)
    if response.status == 416 and case.range is not None:
        # The error names the range the client sent (not one the gateway made up).
        requested = ElementTree.fromstring(response.body).findtext("RangeRequested")
        assert requested in (None, case.range(size)), response.body
    return observed(response)


def s3_answer(case: Case, size: int, data: bytes) -> Answer:
    if case.expect is not None:
        return case.expect(size, data)
    assert case.range is not None
    return aws_range_answer(case.range(size), data)


def _agrees_with_s3(direct: Answer, s3: Answer) -> bool:
    if direct.status == s3.status == 416:
        return direct.body == s3.body  # both test backends leave out Content-Range here
    return direct == s3


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("size", "case"), _params())
def test_encrypted_range_matches_s3(
    request: pytest.FixtureRequest,
    backend: Backend,
    gateway: Gateway,
    pair_cache: dict[tuple[str, int], StoredPair],
    size: int,
    case: Case,
) -> None:
    pair = stored_pair(pair_cache, backend, gateway, size)
    s3 = s3_answer(case, size, pair.data)
    direct = ranged_get(
        backend.endpoint_url, backend.credentials, pair.bucket, pair.plain_key, case, size
    )
    deviation = BACKEND_DEVIATIONS.get((backend.name, case.id))
    if not _agrees_with_s3(direct, s3):
        assert deviation is not None, (
            f"{backend.name} deviates from S3 in a way not listed in BACKEND_DEVIATIONS:\n"
            f"  backend: {direct.describe()}\n  S3:      {s3.describe()}"
        )
    expect_gap(request, backend, case)
    through_gateway = ranged_get(
        gateway.url, GATEWAY_USER, pair.bucket, pair.encrypted_key, case, size
    )
    assert through_gateway == s3, (
        f"gateway: {through_gateway.describe()}\nS3:      {s3.describe()}\n"
        f"backend on plaintext: {direct.describe()}" + (f" ({deviation})" if deviation else "")
    )


@pytest.mark.parametrize(("size", "case"), _params())
def test_unencrypted_range_matches_s3(
    request: pytest.FixtureRequest,
    backend: Backend,
    gateway: Gateway,
    pair_cache: dict[tuple[str, int], StoredPair],
    size: int,
    case: Case,
) -> None:
    """Objects stored before the gateway (unencrypted) get the same answers."""
    pair = stored_pair(pair_cache, backend, gateway, size)
    s3 = s3_answer(case, size, pair.data)
    expect_gap(request, backend, case)
    through_gateway = ranged_get(gateway.url, GATEWAY_USER, pair.bucket, pair.plain_key, case, size)
    assert through_gateway == s3, f"gateway: {through_gateway.describe()}\nS3:      {s3.describe()}"


HEAD_RANGES = ["bytes=0-9", f"bytes={C - 5}-{C + 4}", "bytes=-10", "bytes=100-"]


@pytest.mark.parametrize("range_header", HEAD_RANGES)
def test_head_with_range_matches_s3(
    backend: Backend,
    gateway: Gateway,
    pair_cache: dict[tuple[str, int], StoredPair],
    range_header: str,
) -> None:
    """HeadObject takes a Range too and answers 206 with the range's headers."""
    size = SIZES[-1]
    pair = stored_pair(pair_cache, backend, gateway, size)
    s3 = aws_range_answer(range_header, pair.data)
    head = signed_request(
        gateway.url,
        GATEWAY_USER,
        "HEAD",
        f"/{pair.bucket}/{pair.encrypted_key}",
        headers=[("Range", range_header)],
    )
    assert (head.status, head.headers.get("content-range"), head.headers["content-length"]) == (
        s3.status,
        s3.content_range,
        str(s3.content_length),
    )

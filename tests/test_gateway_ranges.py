"""Ranged GETs through the gateway decrypt only the chunks they need."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from tests.harness import CHUNK_SIZE, Gateway

SIZE = 3 * CHUNK_SIZE + 1234
RANGES = [
    ("bytes=0-0", 0, 0),
    ("bytes=0-99", 0, 99),
    (f"bytes={CHUNK_SIZE - 1}-{CHUNK_SIZE}", CHUNK_SIZE - 1, CHUNK_SIZE),
    (f"bytes={CHUNK_SIZE}-{2 * CHUNK_SIZE - 1}", CHUNK_SIZE, 2 * CHUNK_SIZE - 1),
    ("bytes=100-", 100, SIZE - 1),
    ("bytes=-10", SIZE - 10, SIZE - 1),
    (f"bytes=-{SIZE + 5}", 0, SIZE - 1),
    (f"bytes={SIZE - 1}-{SIZE + 1000}", SIZE - 1, SIZE - 1),
    (f"bytes=5-{SIZE * 2}", 5, SIZE - 1),
]


@pytest.fixture
def encrypted_object(gateway: Gateway, bucket: str) -> bytes:
    data = os.urandom(SIZE)
    gateway.client().put_object(Bucket=bucket, Key="ranged", Body=data)
    return data


@pytest.mark.parametrize(("header", "first", "last"), RANGES, ids=[r[0] for r in RANGES])
def test_ranged_get(
    gateway: Gateway, bucket: str, encrypted_object: bytes, header: str, first: int, last: int
) -> None:
    got = gateway.client().get_object(Bucket=bucket, Key="ranged", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {first}-{last}/{SIZE}"
    assert got["ContentLength"] == last - first + 1
    assert got["Body"].read() == encrypted_object[first : last + 1]


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"])
def test_unsatisfiable_range(
    gateway: Gateway, bucket: str, encrypted_object: bytes, header: str
) -> None:
    with pytest.raises(ClientError) as caught:
        gateway.client().get_object(Bucket=bucket, Key="ranged", Range=header)
    response = caught.value.response
    assert response["Error"]["Code"] == "InvalidRange"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_multiple_ranges_serve_whole_object(
    gateway: Gateway, bucket: str, encrypted_object: bytes
) -> None:
    got = gateway.client().get_object(Bucket=bucket, Key="ranged", Range="bytes=0-1,5-6")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == encrypted_object

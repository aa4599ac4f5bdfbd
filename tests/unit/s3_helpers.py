"""Requests signed by botocore (and boto3), as they would arrive on the wire."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from addons.s3 import sigv4

ACCESS_KEY = "AKIDEXAMPLE1234567890"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-central-1"
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def lookup_secret(access_key: str) -> str | None:
    return {ACCESS_KEY: SECRET_KEY}.get(access_key)


@dataclass(frozen=True)
class Wire:
    """A request as the gateway sees it: raw target, headers in wire order, body."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def with_header(self, name: str, value: str | None) -> Wire:
        """A copy with every ``name`` header removed, then ``name: value`` added."""
        kept = [(n, v) for n, v in self.headers if n.lower() != name.lower()]
        if value is not None:
            kept.append((name, value))
        return replace(self, headers=kept)

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())

    def verify(
        self, now: datetime = NOW, *, expected_region: str | None = None
    ) -> sigv4.AuthContext:
        return sigv4.verify(
            self.method,
            self.path,
            self.query,
            self.headers,
            now,
            lookup_secret,
            expected_region=expected_region,
        )


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def wire_of(method: str, url: str, headers: Any, body: bytes = b"") -> Wire:
    """The request an HTTP client would send for a signed botocore request."""
    parts = urlsplit(url)
    # http.client adds Host from the URL; botocore signs that same value.
    wire_headers = [("Host", parts.netloc)]
    wire_headers += [(name, _text(value)) for name, value in headers.items()]
    return Wire(method, parts.path or "/", parts.query, wire_headers, body)


@contextmanager
def frozen_signing_clock(when: datetime = NOW) -> Iterator[None]:
    naive = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        yield


def sign_with_botocore(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    when: datetime = NOW,
    unsigned_payload: bool = False,
    presign_expires: int | None = None,
    secret: str = SECRET_KEY,
) -> Wire:
    """Sign with botocore's own S3 signers; repeated header names stay repeated."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: names can repeat
    if unsigned_payload:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    credentials = Credentials(ACCESS_KEY, secret)
    signer: S3SigV4Auth
    if presign_expires is None:
        signer = S3SigV4Auth(credentials, "s3", REGION)
    else:
        signer = S3SigV4QueryAuth(credentials, "s3", REGION, expires=presign_expires)
    with frozen_signing_clock(when):
        signer.add_auth(request)
    # Not request.prepare(): that folds repeated headers into one.
    return wire_of(method, request.url, request.headers, body)


class _RawBody:
    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._payload


@dataclass
class CapturingClient:
    """A boto3 S3 client whose requests are captured instead of sent."""

    client: Any
    sent: list[Wire] = field(default_factory=list)

    def _before_send(self, request: Any, **_: object) -> AWSResponse:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        self.sent.append(wire_of(request.method, request.url, request.headers, body or b""))
        payload = b"<ListBucketResult></ListBucketResult>" if request.method == "GET" else b""
        return AWSResponse(request.url, 200, {}, _RawBody(payload))

    def last(self) -> Wire:
        return self.sent[-1]


def capturing_client(endpoint: str, **config: Any) -> CapturingClient:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    client = session.client(
        "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}, **config)
    )
    capture = CapturingClient(client)
    client.meta.events.register("before-send", capture._before_send)
    return capture


def body_stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def header_dict(wire: Wire) -> Mapping[str, str]:
    return {name.lower(): value for name, value in wire.headers}


# AWS's documented examples (S3 API reference, Signature Version 4 pages).

DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = datetime(2013, 5, 24, tzinfo=UTC)
DOC_DATE = "20130524T000000Z"
DOC_SCOPE = f"{DOC_KEY}/20130524/us-east-1/s3/aws4_request"
DOC_HOST = ("Host", "examplebucket.s3.amazonaws.com")


def doc_lookup(access_key: str) -> str | None:
    return DOC_SECRET if access_key == DOC_KEY else None


def doc_authorization(signed_headers: str, signature: str) -> tuple[str, str]:
    value = f"AWS4-HMAC-SHA256 Credential={DOC_SCOPE},SignedHeaders={signed_headers},"
    return ("Authorization", value + f"Signature={signature}")


def doc_verify(
    method: str, target: str, headers: list[tuple[str, str]], now: datetime = DOC_NOW
) -> sigv4.AuthContext:
    path, _, query = target.partition("?")
    return sigv4.verify(method, path, query, headers, now, doc_lookup)

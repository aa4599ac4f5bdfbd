"""Malformed requests against the real gateway: never a 5xx, always S3's XML error.

A seeded generator (``S3GW_FUZZ_SEED``, ``S3GW_FUZZ_COUNT`` per category)
sends requests over raw sockets: Authorization headers and presigned queries
with random edits, broken aws-chunked bodies, bad XML for DeleteObjects and
CompleteMultipartUpload, odd Range values, odd and oversized metadata, bad
upload ids and odd keys. After each request the answer must not be a 5xx
and every error must be S3's ``<Error>`` document with the request id of its
``x-amz-request-id`` header (HEAD: the header and ``x-amz-error-code``).
At the end the gateway is still alive and logged no addon failure.

Requests whose signature is valid are signed by botocore (tests/rawclient.py),
so the edits reach the parsers behind the signature check too.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from tests.harness import GATEWAY_USER, UNKNOWN_USER, Backend, Gateway, GatewayFactory, make_bucket
from tests.rawclient import STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER, sign, signed_chunks

SEED = int(os.environ.get("S3GW_FUZZ_SEED", "20261125"))
COUNT = int(os.environ.get("S3GW_FUZZ_COUNT", "40"))
# What mitmproxy's own HTTP/1 parser refuses before any addon runs is out of
# scope (docs/SECURITY.md, open points): the generator sends only header values
# it accepts (no control characters), and request targets without spaces.
_HEADER_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_FAILURE_MARKERS = ("Addon error", "failing closed", "Traceback")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(
    gateway: Gateway | int,
    method: str,
    target: str,
    headers: list[tuple[str, str | bytes]],
    body: bytes = b"",
) -> Answer | None:
    """One request over a fresh socket, bytes exactly as given; None if the gateway
    (or the server on that local port) closed the connection without answering."""
    port = gateway if isinstance(gateway, int) else gateway.port
    lines = [f"{method} {target} HTTP/1.1".encode()]
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        lines.append(f"Host: 127.0.0.1:{port}".encode())
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        lines.append(name.encode() + b": " + raw)
    if "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}".encode())
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # The gateway may answer (or close) before it has read the whole body.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            content = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)


def check_answer(answer: Answer | None, method: str, what: str) -> None:
    assert answer is not None, f"{what}: connection closed without an answer"
    context = f"{what}: {answer.status} {answer.headers} {answer.body[:600]!r}"
    assert answer.status < 500 or (
        answer.status == 503 and b"<Code>SlowDown</Code>" in answer.body
    ), context
    if answer.status < 300 or answer.status in (304, 307):
        return
    gateway_id = answer.headers.get("x-s3gw-request-id")
    assert gateway_id, context
    # The gateway's own answers carry its request id as x-amz-request-id too; a
    # backend's error passed through carries the backend's id, if any.
    made_by_gateway = answer.headers.get("x-amz-request-id") == gateway_id
    if method == "HEAD":
        assert not made_by_gateway or answer.headers.get("x-amz-error-code"), context
        return
    content_type = answer.headers.get("content-type", "")
    if made_by_gateway:
        assert content_type.startswith("application/xml"), context
    else:  # moto and rclone differ from S3 here; still an S3 error document
        assert content_type.startswith(("application/xml", "text/xml")), context
    root = ElementTree.fromstring(answer.body)
    assert root.tag == "Error", context
    assert root.findtext("Code"), context
    if made_by_gateway:
        assert root.findtext("RequestId") == gateway_id, context


# --------------------------------------------------------------------------- generators


def odd_text(rng: random.Random, max_len: int = 40) -> str:
    pieces = [
        "AWS4-HMAC-SHA256", "Credential=", "SignedHeaders=", "Signature=", "/", ",", ";",
        "=", " ", "aws4_request", "s3", "é", "%", "%ZZ", "+", "&", "9" * 25, "-1",
        GATEWAY_USER.access_key_id, "host", "x-amz-date", "\t",
    ]  # fmt: skip
    out = []
    while len("".join(out)) < rng.randint(0, max_len):
        if rng.random() < 0.6:
            out.append(rng.choice(pieces))
        else:
            raw = bytes(rng.choice(_HEADER_BYTES) for _ in range(rng.randint(1, 6)))
            out.append(raw.decode("utf-8", "surrogateescape"))
    return "".join(out)


def mutate(rng: random.Random, value: str) -> str:
    """One random edit that really changes ``value`` (a valid upload id left as it
    was would abort the upload, and moto answers parts of aborted uploads with a 500)."""
    for _ in range(8):
        edited = _mutate_once(rng, value)
        if edited != value:
            return edited
    return value + "x"


def _mutate_once(rng: random.Random, value: str) -> str:
    if not value:
        return odd_text(rng)
    i = rng.randint(0, len(value))
    j = rng.randint(i, min(len(value), i + 20))
    edit = rng.choice(["replace", "insert", "delete", "truncate", "repeat"])
    if edit == "replace":
        return value[:i] + odd_text(rng, 10) + value[j:]
    if edit == "insert":
        return value[:i] + odd_text(rng, 10) + value[i:]
    if edit == "delete":
        return value[:i] + value[j:]
    if edit == "truncate":
        return value[:i]
    return value[:j] + value[i:j] * rng.randint(1, 3) + value[j:]


def mutate_bytes(rng: random.Random, value: bytes) -> bytes:
    if not value:
        return os.urandom(rng.randint(1, 20))
    i = rng.randrange(len(value))
    j = rng.randint(i, min(len(value), i + 20))
    edit = rng.choice(["flip", "insert", "delete", "truncate", "replace"])
    if edit == "flip":
        return value[:i] + bytes([value[i] ^ (1 << rng.randrange(8))]) + value[i + 1 :]
    if edit == "insert":
        return value[:i] + rng.choice([b"\r\n", b"0", b";", b"x", os.urandom(3)]) + value[i:]
    if edit == "delete":
        return value[:i] + value[j:]
    if edit == "truncate":
        return value[:i]
    return value[:i] + os.urandom(j - i) + value[j:]


def wire_quote(text: str, safe: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


def ascii_text(text: str) -> str:
    """What botocore can sign in a header value (it refuses non-Latin-1 text)."""
    return text.encode("ascii", "replace").decode("ascii")


def signed(
    gateway: Gateway,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    payload_hash: str | None = None,
) -> list[tuple[str, str | bytes]]:
    """Headers of a request signed by botocore with the first client key."""
    signed_headers = sign(
        method, gateway.url + target, GATEWAY_USER, body=body, headers=headers,
        payload_hash=payload_hash,
    )  # fmt: skip
    return list(signed_headers.items())


# --------------------------------------------------------------------------- the run


class Run:
    def __init__(self, gateway: Gateway, backend: Backend, bucket: str, category: str) -> None:
        self.gateway = gateway
        self.backend = backend
        self.bucket = bucket
        self.rng = random.Random(f"{SEED}-{category}-{backend.name}")
        self.sent = 0

    def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str | bytes]],
        body: bytes = b"",
        *,
        what: str = "",
    ) -> Answer | None:
        answer = exchange(self.gateway, method, target, headers, body)
        self.sent += 1
        if (
            answer is not None
            and answer.status >= 500
            and self._backend_fails_too(answer, method, target, body)
        ):
            return answer
        check_answer(answer, method, f"{what or method} {target[:200]!r}")
        return answer

    def _backend_fails_too(self, answer: Answer, method: str, target: str, body: bytes) -> bool:
        """A 5xx the backend made (passed through, not the gateway's own) counts as the
        backend's if the backend answers the same request, sent to it directly, with a
        5xx too (rclone: a key that is also a directory, a name over 255 bytes)."""
        if answer.headers.get("x-amz-request-id") == answer.headers.get("x-s3gw-request-id"):
            return False  # the gateway's own answer
        url = self.backend.endpoint_url + target
        headers = sign(method, url, self.backend.credentials, body=body)
        port = int(self.backend.endpoint_url.rsplit(":", 1)[1])
        direct = exchange(port, method, target, list(headers.items()), body)
        return direct is not None and direct.status >= 500


@pytest.fixture
def seeded_object(gateway: Gateway, bucket: str) -> str:
    gateway.client().put_object(Bucket=bucket, Key="seed.bin", Body=os.urandom(200_000))
    return "seed.bin"


def _fuzz(gateway: Gateway, backend: Backend, bucket: str, category: str) -> Iterator[Run]:
    mark = gateway.log_mark()
    run = Run(gateway, backend, bucket, category)
    yield run
    assert gateway.alive(), gateway.output(mark)[-3000:]
    # Nothing failed inside the gateway along the way (not even a caught crash).
    output = gateway.output(mark)
    for marker in _FAILURE_MARKERS:
        assert marker not in output, output[output.find(marker) - 200 :][:4000]
    # And it still serves.
    gateway.client().put_object(Bucket=bucket, Key="after-fuzz", Body=b"still here")
    body = gateway.client().get_object(Bucket=bucket, Key="after-fuzz")["Body"].read()
    assert body == b"still here"


CategoryFn = Callable[[Run], None]
CATEGORIES: dict[str, CategoryFn] = {}


def category(function: CategoryFn) -> CategoryFn:
    CATEGORIES[function.__name__] = function
    return function


@category
def authorization_headers(run: Run) -> None:
    target = f"/{run.bucket}/auth-{run.rng.randrange(5)}"
    for _ in range(COUNT):
        method = run.rng.choice(["GET", "PUT", "HEAD", "DELETE"])
        body = b"fuzz" if method == "PUT" else b""
        headers = signed(run.gateway, method, target, body=body)
        for _ in range(run.rng.randint(1, 3)):
            index = run.rng.randrange(len(headers))
            name, value = headers[index]
            action = run.rng.choice(["edit", "edit", "edit", "drop", "duplicate", "add"])
            if action == "edit" and name.lower() != "host":
                text = value.decode() if isinstance(value, bytes) else value
                headers[index] = (name, mutate(run.rng, text))
            elif action == "drop" and name.lower() != "host":
                headers.pop(index)
            elif action == "duplicate" and name.lower() != "host":
                headers.append(headers[index])
            else:
                extra = run.rng.choice(
                    ["Authorization", "X-Amz-Date", "Date", "X-Amz-Content-SHA256"]
                )
                headers.append((extra, odd_text(run.rng)))
        run.send(method, target, headers, body, what="authorization")
    # The shapes found by the unit fuzz: non-ASCII credential scope, with a known key.
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for region in ("é", "\udcff", "us-east-1\x80"):
        scope = f"{GATEWAY_USER.access_key_id}/{now[:8]}/{region}/s3/aws4_request"
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={scope}, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}"
        )
        headers = [
            ("X-Amz-Date", now),
            ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
            ("Authorization", authorization),
        ]
        answer = run.send("PUT", f"/{run.bucket}/unauthenticated", headers, b"x", what="scope")
        assert answer is not None and answer.status == 403, answer
    assert "unauthenticated" not in _stored_keys(run)


@category
def presigned_queries(run: Run) -> None:
    target = f"/{run.bucket}/seed.bin"
    for _ in range(COUNT):
        credentials = run.rng.choice([GATEWAY_USER, GATEWAY_USER, UNKNOWN_USER])
        client = run.gateway.client(credentials)
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": run.bucket, "Key": "seed.bin"}, ExpiresIn=300
        )
        query = url.split("?", 1)[1]
        pairs = [part.partition("=")[::2] for part in query.split("&")]
        for _ in range(run.rng.randint(1, 3)):
            index = run.rng.randrange(len(pairs))
            name, value = pairs[index]
            action = run.rng.choice(["value", "value", "name", "drop", "duplicate", "add"])
            if action == "value":
                pairs[index] = (name, wire_quote(mutate(run.rng, value), "%+=/"))
            elif action == "name":
                pairs[index] = (wire_quote(mutate(run.rng, name), "%-"), value)
            elif action == "drop":
                pairs.pop(index)
            elif action == "duplicate":
                pairs.append(pairs[index])
            else:
                extra = run.rng.choice(
                    ["X-Amz-Expires", "Signature", "AWSAccessKeyId", "partNumber"]
                )
                pairs.append((extra, wire_quote(odd_text(run.rng), "")))
        full = target + "?" + "&".join(f"{n}={v}" for n, v in pairs)
        headers: list[tuple[str, str | bytes]] = []
        if run.rng.random() < 0.2:
            headers.append(("Authorization", odd_text(run.rng)))
        run.send("GET", full, headers, what="presigned")
    expires = "9" * 5000
    pairs_text = query.replace("X-Amz-Expires=300", f"X-Amz-Expires={expires}")
    run.send("GET", f"{target}?{pairs_text}", [], what="long X-Amz-Expires")


def _chunked_headers(
    run: Run, target: str, length: int | str, mode: str
) -> list[tuple[str, str | bytes]]:
    extra = [("Content-Encoding", "aws-chunked"), ("X-Amz-Decoded-Content-Length", str(length))]
    if mode == STREAMING_UNSIGNED_TRAILER:
        extra.append(("X-Amz-Trailer", "x-amz-checksum-crc32"))
    return signed(run.gateway, "PUT", target, headers=extra, payload_hash=mode)


@category
def aws_chunked_bodies(run: Run) -> None:
    from tests.rawclient import crc32_trailer_body

    for i in range(COUNT):
        target = f"/{run.bucket}/chunked-{i % 4}"
        size = run.rng.choice([0, 1, 9000, 20_000, 70_000])
        data = os.urandom(size)
        mode = run.rng.choice([STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER])
        # Now and then a decoded length that lies, signed as sent.
        lies: list[int | str] = [0, size + 1, 2**63, "x", "\u00b2", "9" * 5000, "-1", " 7"]
        decoded = run.rng.choice(lies) if run.rng.random() < 0.25 else size
        headers = _chunked_headers(run, target, decoded, mode)
        if mode == STREAMING_SIGNED:
            header_map = {str(n): str(v) for n, v in headers}
            body = b"".join(signed_chunks(data, 8192, headers=header_map, credentials=GATEWAY_USER))
        else:
            body = crc32_trailer_body(data, 8192)
        for _ in range(run.rng.randint(0 if i == 0 else 1, 3)):
            body = mutate_bytes(run.rng, body)
        run.send("PUT", target, headers, body, what="aws-chunked")


_DELETE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>false</Quiet>'
    b"<Object><Key>a</Key></Object><Object><Key>b&amp;c</Key></Object></Delete>"
)
_COMPLETE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b'<Part><PartNumber>1</PartNumber><ETag>"0123456789abcdef0123456789abcdef"</ETag></Part>'
    b"</CompleteMultipartUpload>"
)
_XML_SNIPPETS = [
    b"<", b">", b"</", b"/>", b"<Object>", b"<Key>", b"</Key>", b"<Part>", b"<PartNumber>",
    b"99999999999999999999", b"-1", b"0", b"&amp;", b"&#0;", b"&bogus;",
    b"<!DOCTYPE d [<!ENTITY e 'x'>]>", b"<![CDATA[x]]>", b"<?pi x?>", b"\xff", b"\x00",
    b'<?xml version="1.0" encoding="x-bogus"?>', b"<VersionId>", b"</Delete>",
]  # fmt: skip


def mutate_xml(run: Run, document: bytes) -> bytes:
    for _ in range(run.rng.randint(1, 3)):
        if run.rng.random() < 0.5:
            i = run.rng.randint(0, len(document))
            document = document[:i] + run.rng.choice(_XML_SNIPPETS) + document[i:]
        else:
            document = mutate_bytes(run.rng, document)
    return document


def _with_md5(body: bytes) -> list[tuple[str, str]]:
    import hashlib

    return [("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())]


@category
def delete_objects_xml(run: Run) -> None:
    target = f"/{run.bucket}?delete="
    for _ in range(COUNT):
        body = mutate_xml(run, _DELETE)
        headers = signed(run.gateway, "POST", target, body=body, headers=_with_md5(body))
        run.send("POST", target, headers, body, what="DeleteObjects")


def _upload_token(run: Run, key: str) -> str:
    created = run.gateway.client().create_multipart_upload(Bucket=run.bucket, Key=key)
    token: str = created["UploadId"]
    return token


@category
def complete_multipart_xml(run: Run) -> None:
    token = _upload_token(run, "mpu-complete")
    target = f"/{run.bucket}/mpu-complete?uploadId={quote(token, safe='')}"
    for _ in range(COUNT):
        body = mutate_xml(run, _COMPLETE)
        headers = signed(run.gateway, "POST", target, body=body)
        run.send("POST", target, headers, body, what="CompleteMultipartUpload")


@category
def upload_ids(run: Run) -> None:
    token = _upload_token(run, "mpu-ids")
    for _ in range(COUNT):
        bad = mutate(run.rng, token) if run.rng.random() < 0.7 else odd_text(run.rng, 60)
        upload_id = quote(bad.encode("utf-8", "surrogateescape"), safe="")
        method, query, body = run.rng.choice(
            [
                ("PUT", f"partNumber={run.rng.choice(['1', '0', '10001', 'x', ''])}&", b"part"),
                ("GET", "", b""),
                ("DELETE", "", b""),
                ("POST", "", _COMPLETE),
            ]
        )
        target = f"/{run.bucket}/mpu-ids?{query}uploadId={upload_id}"
        headers = signed(run.gateway, method, target, body=body)
        run.send(method, target, headers, body, what="upload id")


@category
def ranges(run: Run) -> None:
    target = f"/{run.bucket}/seed.bin"
    samples = [
        "bytes=0-0", "bytes=-0", "bytes=0-", "bytes=199999-", "bytes=200000-", "bytes=-1",
        "bytes=5-3", "bytes=1-2,4-5", "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 40,
        "bits=0-1", "bytes = 3 - 9", "bytes=0x10-20", "bytes=\u00e9-1", "bytes=--1", "=",
    ]  # fmt: skip
    for i in range(COUNT + len(samples)):
        value = samples[i] if i < len(samples) else mutate(run.rng, run.rng.choice(samples))
        method = run.rng.choice(["GET", "GET", "HEAD"])
        extra = [("Range", ascii_text(value))]
        if run.rng.random() < 0.3:
            extra.append(("If-Range", ascii_text(mutate(run.rng, '"etag"'))))
        if run.rng.random() < 0.3:
            # Range is not an x-amz-* header: it may be sent unsigned, with any bytes.
            headers = signed(run.gateway, method, target, headers=extra[1:])
            headers.append(("Range", value.encode("utf-8", "surrogateescape")))
        else:
            headers = signed(run.gateway, method, target, headers=extra)
        run.send(method, target, headers, what=f"Range {value[:40]!r}")


@category
def metadata(run: Run) -> None:
    for i in range(COUNT):
        target = f"/{run.bucket}/meta-{i % 3}"
        headers: list[tuple[str, str]] = []
        for _ in range(run.rng.randint(1, 6)):
            name = "x-amz-meta-" + run.rng.choice(
                ["a", "s3gw", "S3GW", "x" * 300, "é", "_-.", "dup", ""]
            )
            size = run.rng.choice([0, 1, 100, 1000, 2100, 4000])
            value = "".join(run.rng.choice("abc é\t€") for _ in range(size)).strip()
            headers.append((name, value))
        try:
            signed_headers = signed(run.gateway, "PUT", target, body=b"m", headers=headers)
        except (ValueError, UnicodeError):
            continue  # botocore cannot sign it; nothing to learn
        if run.rng.random() < 0.3:  # raw high bytes, not UTF-8 (the signature will not match)
            signed_headers.append(("x-amz-meta-raw", bytes([0xFF, 0xC3, 0x28])))
        run.send("PUT", target, signed_headers, b"m", what="metadata")


@category
def odd_keys(run: Run) -> None:
    fragments = [
        "a", "..", ".", "/", "//", "%", "%2F", "%252F", "é", "日本", "?", "#", "+", " ",
        "~", "!", "'", "(", "*", "\t", "x" * 200, "\udcff",
    ]  # fmt: skip
    for _ in range(COUNT):
        key = "".join(run.rng.choice(fragments) for _ in range(run.rng.randint(1, 8)))
        if run.rng.random() < 0.1:  # around S3's limit of 1024 bytes
            key = "k" * run.rng.choice([1024, 1025, 3000])
        # rclone stores keys as file paths: a name over 255 bytes is its 500, not ours.
        key = "/".join(key[i : i + 60] for i in range(0, len(key), 60))
        raw = key.encode("utf-8", "surrogateescape")
        target = f"/{run.bucket}/" + quote(raw, safe="/" if run.rng.random() < 0.5 else "")
        method = run.rng.choice(["PUT", "GET", "HEAD", "DELETE"])
        body = b"k" if method == "PUT" else b""
        headers = signed(run.gateway, method, target, body=body)
        run.send(method, target, headers, body, what="odd key")


def _stored_keys(run: Run) -> list[str]:
    listing = run.backend.client().list_objects_v2(Bucket=run.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_malformed_requests_get_s3_errors(
    name: str, backend: Backend, gateway: Gateway, bucket: str, seeded_object: str
) -> None:
    for run in _fuzz(gateway, backend, bucket, name):
        CATEGORIES[name](run)
        assert run.sent >= COUNT


@pytest.mark.parametrize(
    "decoded", ["\u00b2", "9" * 5000, "-1"], ids=["superscript", "long", "neg"]
)
def test_odd_decoded_content_length_is_invalid_argument(
    moto_backend: Backend, gateway_factory: GatewayFactory, decoded: str
) -> None:
    """Found by the fuzz run: "²" passes str.isdigit() but not int(), nor do 5000 digits."""
    gateway = gateway_factory(moto_backend)
    bucket = make_bucket(moto_backend)
    target = f"/{bucket}/odd-length"
    headers = signed(
        gateway, "PUT", target, payload_hash=STREAMING_UNSIGNED_TRAILER,
        headers=[("Content-Encoding", "aws-chunked"), ("X-Amz-Decoded-Content-Length", decoded)],
    )  # fmt: skip
    answer = exchange(gateway, "PUT", target, headers, b"0\r\n\r\n")
    check_answer(answer, "PUT", "odd decoded length")
    assert answer is not None and answer.status == 400, answer
    assert b"<Code>InvalidArgument</Code>" in answer.body, answer.body

"""The AccessLog addon: each preset's format, and that no secret is ever written."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from mitmproxy import exceptions, http

from addons.accesslog import FORMATS, AccessLog, bare, quoted
from addons.config import Config
from addons.flowstate import state_of
from tests.unit.chain import (
    ACCESS_KEY,
    BACKEND_SECRET,
    HOST,
    SECRET_KEY,
    SESSION_TOKEN,
    Chain,
    MemoryS3,
    gateway_chain,
    presigned,
    signed,
)

KEY = 'reports/q3 "final".pdf'
CUSTOM_SECRET = "custom-header-secret-0123456789"
SIGV2_SECRET = "sigv2SignatureSecretValue%2B%3D"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLF = re.compile(
    r"(?P<remote>\S+) - (?P<user>\S+) \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?'
)


@contextmanager
def logging_chain(
    tmp_path: Path, preset: str, **options: Any
) -> Iterator[tuple[Chain, io.StringIO]]:
    out = io.StringIO()
    settings = {"gw_access_log": "-", "gw_access_log_format": preset, **options}
    with gateway_chain(tmp_path, [lambda c: AccessLog(c, out=out)], options=settings) as chain:
        yield chain, out


def lines(out: io.StringIO) -> list[str]:
    text = out.getvalue()
    assert text.endswith("\n")
    return text.splitlines()


def secret_laden_requests() -> list[Any]:
    """Requests carrying every kind of secret the log must not show."""
    put = signed(
        "PUT",
        "/bucket/" + quote(KEY),
        b"hello",
        {"X-Custom-Secret": CUSTOM_SECRET, "User-Agent": "test-agent/1.0"},
        token=SESSION_TOKEN,
    )
    get = presigned("GET", "/bucket/" + quote(KEY), token=SESSION_TOKEN)
    get.headers["Referer"] = "https://app.example/view?" + get.path.split("?", 1)[1]
    get.headers["X-Custom-Secret"] = CUSTOM_SECRET
    wrong = signed("GET", "/bucket/" + quote(KEY), secret="wrong" + SECRET_KEY)
    sigv2 = http.Request.make(
        "GET",
        f"http://{HOST}/bucket/k?AWSAccessKeyId={ACCESS_KEY}&Expires=1&Signature={SIGV2_SECRET}",
        b"",
        {"Host": HOST},
    )
    return [put, get, wrong, sigv2]


def secrets_of(requests: list[Any]) -> set[str]:
    found = {SECRET_KEY, SESSION_TOKEN, CUSTOM_SECRET, BACKEND_SECRET, SIGV2_SECRET}
    for request in requests:
        authorization = request.headers.get("authorization")
        if authorization:
            found.add(authorization.rsplit("Signature=", 1)[1])
            found.add(authorization.split("Credential=", 1)[1].split(",", 1)[0])
        if "X-Amz-Signature" in request.query:
            found.add(request.query["X-Amz-Signature"])
            credential = request.query["X-Amz-Credential"]
            found.update({credential, quote(credential, safe="")})
    found.update({quote(s, safe="") for s in list(found)})
    return found


@pytest.mark.parametrize("preset", FORMATS)
def test_no_secret_appears_in_any_preset(tmp_path: Path, preset: str) -> None:
    requests = secret_laden_requests()
    options = {
        "gw_access_log_redact": ["x-custom-secret"],
        # Asking for the credential headers still shows them redacted.
        "gw_access_log_headers": ["authorization", "x-amz-security-token", "x-custom-secret"],
    }
    with logging_chain(tmp_path, preset, **options) as (chain, out):
        backend = MemoryS3()
        statuses = [chain.send(request, backend)[0].response.status_code for request in requests]  # type: ignore[union-attr]
    assert statuses[:3] == [200, 200, 403] and statuses[3] >= 400
    text = out.getvalue()
    assert len(lines(out)) == len(requests)
    for secret in secrets_of(requests):
        assert secret not in text, (secret, text)
    assert "REDACTED" in text
    assert ACCESS_KEY in text  # the user is logged: an identity, not a secret


def test_json_fields(tmp_path: Path) -> None:
    with logging_chain(tmp_path, "json", gw_access_log_headers=["authorization", "x-other"]) as (
        chain,
        out,
    ):
        request = signed(
            "PUT",
            "/bucket/" + quote(KEY),
            b"hello",
            {"User-Agent": "test-agent/1.0", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        flow, _ = chain.send(request, MemoryS3())
        chain.send(signed("GET", "/bucket/missing"), MemoryS3())
    state = state_of(flow)
    assert state is not None
    put, head = (json.loads(line) for line in lines(out))
    duration = put.pop("duration_ms")
    assert isinstance(duration, float) and duration >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", put.pop("time"))
    assert put == {
        "request_id": state.request_id,
        "remote": "127.0.0.1",
        "user": ACCESS_KEY,
        "method": "PUT",
        "operation": "PutObject",
        "bucket": "bucket",
        "key": KEY,
        "uri": "/bucket/" + quote(KEY),
        "status": 200,
        "error": None,
        "bytes_in": 5,
        "bytes_out": 0,
        "encryption": "s3g1",
        "aborted": False,
        "user_agent": "test-agent/1.0",
        "trace_id": TRACE_ID,
        "headers": {"authorization": "REDACTED"},
    }
    assert head["status"] == 404 and head["error"] == "NoSuchKey"
    assert head["operation"] == "GetObject" and head["bytes_out"] > 0


@pytest.mark.parametrize("preset", ["common", "combined"])
def test_common_and_combined_log_format(tmp_path: Path, preset: str) -> None:
    with logging_chain(tmp_path, preset) as (chain, out):
        backend = MemoryS3()
        chain.send(signed("PUT", "/bucket/" + quote(KEY), b"hello world"), backend)
        request = signed("GET", "/bucket/" + quote(KEY), headers={"User-Agent": 'agent "x"'})
        chain.send(request, backend)
        chain.send(signed("GET", "/bucket/k", secret="wrong"), backend)
    put, get, refused = (CLF.fullmatch(line) for line in lines(out))
    assert put and get and refused
    assert put["remote"] == "127.0.0.1" and put["user"] == ACCESS_KEY
    assert put["request"] == f"PUT /bucket/{quote(KEY)} HTTP/1.1"
    assert (put["status"], put["bytes"]) == ("200", "-")
    assert (get["status"], get["bytes"]) == ("200", "11")
    assert (refused["user"], refused["status"]) == ("-", "403")
    if preset == "combined":
        assert get["referer"] == "-" and get["agent"] == 'agent \\"x\\"'
    else:
        assert get["referer"] is None


def test_s3_server_access_log_style(tmp_path: Path) -> None:
    with logging_chain(tmp_path, "s3") as (chain, out):
        backend = MemoryS3()
        flow, _ = chain.send(signed("PUT", "/bucket/" + quote(KEY), b"hello"), backend)
        chain.send(presigned("GET", "/bucket/" + quote(KEY)), backend)
    put_line, get_line = lines(out)
    fields = re.findall(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\S+', put_line)
    assert len(fields) == 26
    state = state_of(flow)
    assert state is not None
    assert fields[:10] == [
        "-",
        "bucket",
        fields[2],
        "127.0.0.1",
        ACCESS_KEY,
        state.request_id,
        "REST.PUT.OBJECT",
        quote(KEY, safe="/"),
        f'"PUT /bucket/{quote(KEY)} HTTP/1.1"',
        "200",
    ]
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]", fields[2])
    assert fields[10] == "-" and fields[19] == "SigV4" and fields[21] == "AuthHeader"
    assert fields[22] == "gateway.test:8080"
    get_fields = re.findall(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\S+', get_line)
    assert get_fields[6] == "REST.GET.OBJECT" and get_fields[21] == "QueryString"
    assert get_fields[11] == "5"  # bytes sent


@pytest.mark.parametrize("preset", FORMATS)
def test_hidden_keys_leave_no_trace_of_the_key(tmp_path: Path, preset: str) -> None:
    with logging_chain(tmp_path, preset, gw_access_log_hide_keys=True) as (chain, out):
        backend = MemoryS3()
        chain.send(signed("PUT", "/bucket/" + quote(KEY), b"x"), backend)
        chain.send(signed("GET", "/bucket?list-type=2&prefix=reports%2Fq3"), backend)
    text = out.getvalue()
    assert "reports" not in text and "q3" not in text and "final" not in text
    assert "/bucket/REDACTED" in text


def test_log_injection_is_escaped() -> None:
    assert quoted('a"b\\c\nd\x1b') == '"a\\"b\\\\c\\x0ad\\x1b"'
    assert bare('a b"c') == 'a\\x20b\\"c'
    assert quoted("") == '"-"' and bare(None) == "-"


def test_key_with_newline_stays_on_one_line(tmp_path: Path) -> None:
    for preset in FORMATS:
        with logging_chain(tmp_path, preset) as (chain, out):
            chain.send(signed("HEAD", "/bucket/evil%0Akey%22"), MemoryS3())
        assert len(lines(out)) == 1


def test_file_destination_appends(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    log_file.write_text("earlier line\n")
    with gateway_chain(
        tmp_path,
        [AccessLog],
        observability={"access_log": str(log_file), "access_log_format": "common"},
    ) as chain:
        chain.send(signed("HEAD", "/bucket/k"), MemoryS3())
        chain.send(signed("HEAD", "/bucket/k"), MemoryS3())
    written = log_file.read_text().splitlines()
    assert written[0] == "earlier line" and len(written) == 3
    assert all(CLF.fullmatch(line) for line in written[1:])


def test_off_by_default(tmp_path: Path) -> None:
    out = io.StringIO()
    with gateway_chain(tmp_path, [lambda c: AccessLog(c, out=out)]) as chain:
        chain.send(signed("HEAD", "/bucket/k"), MemoryS3())
    assert out.getvalue() == ""


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(exceptions.OptionsError, match="gw_access_log_format"),
        logging_chain(tmp_path, "apache"),
    ):
        pass


def test_unwritable_destination_is_refused(tmp_path: Path) -> None:
    destination = str(tmp_path / "no" / "such.log")
    with (
        pytest.raises(exceptions.OptionsError, match="gw_access_log"),
        gateway_chain(tmp_path, [AccessLog], options={"gw_access_log": destination}),
    ):
        pass


def test_backend_failure_and_health_probes(tmp_path: Path) -> None:
    with logging_chain(tmp_path, "json") as (chain, out):
        chain.send(signed("GET", "/bucket/k"), backend=None)  # nothing answers
    entry = json.loads(lines(out)[0])
    assert (entry["status"], entry["error"], entry["aborted"]) == (502, "BadGateway", True)
    assert Config  # the chain's Config is what AccessLog reads its settings from

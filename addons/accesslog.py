"""One access-log line per request: JSON, Common/Combined Log Format or S3 server-access-log style.

``gw_access_log`` names the destination (``-`` for stdout, ``stderr``, or a file,
appended to); ``gw_access_log_format`` the preset. Credentials never reach the
log: Authorization and security-token headers, presigned-URL signatures and
credentials, and any configured header (and query parameter of that name) are
written as ``REDACTED``; object keys too if ``redact_object_keys`` is on.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from addons.config import Config
from addons.flowstate import FlowState, state_of
from addons.observe import (
    Outcome,
    Redactor,
    client_headers,
    client_target,
    finish_once,
    observability,
    outcome,
)

log = logging.getLogger("s3gw")

FORMATS = ("json", "common", "combined", "s3")
_OPTIONS = {
    "gw_access_log",
    "gw_access_log_format",
    "gw_access_log_headers",
    "gw_access_log_redact",
    "gw_access_log_hide_keys",
    "gw_config",
}
_UNSAFE = re.compile(r"[^\x21\x23-\x5b\x5d-\x7e ]")  # outside printable ASCII, or " or \
_UNSAFE_BARE = re.compile(r"[^\x21\x23-\x5b\x5d-\x7e]")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in '"\\':
        return "\\" + char
    return "".join(f"\\x{b:02x}" for b in char.encode("utf-8"))


def quoted(value: str | None) -> str:
    """A double-quoted CLF field, escaped like Apache's (``"-"`` when empty)."""
    return '"' + _UNSAFE.sub(_escape, value) + '"' if value else '"-"'


def bare(value: str | None) -> str:
    """An unquoted CLF field: no spaces, quotes or control characters (``-`` when empty)."""
    return _UNSAFE_BARE.sub(_escape, value) if value else "-"


def _clf_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")


def _iso_time(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _user(state: FlowState) -> str | None:
    auth = state.auth
    return str(auth.access_key) if auth is not None else None


def _remote(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else None


def _trace_id(flow: http.HTTPFlow) -> str | None:
    match = _TRACEPARENT.fullmatch(flow.request.headers.get("traceparent", "").strip())
    return match.group(1) if match else None


def _s3_operation(flow: http.HTTPFlow, state: FlowState) -> str:
    """S3's ``REST.<METHOD>.<RESOURCE>`` operation field."""
    operation = state.operation
    if operation.name == "CopyObject":
        return "REST.COPY.OBJECT"
    resource = "OBJECT" if operation.key else "BUCKET" if operation.bucket else "SERVICE"
    return f"REST.{flow.request.method.upper()}.{resource}"


class LineFormatter:
    """Turns a finished flow into one log line of a preset."""

    def __init__(self, preset: str, redactor: Redactor, headers: Sequence[str] = ()) -> None:
        if preset not in FORMATS:
            raise ValueError(f"unknown access log format {preset!r} (one of {', '.join(FORMATS)})")
        self.preset = preset
        self.redactor = redactor
        self.headers = [h.strip().lower() for h in headers if h.strip()]

    def __call__(self, flow: http.HTTPFlow, state: FlowState, result: Outcome) -> str:
        if self.preset == "json":
            return self.json(flow, state, result)
        if self.preset == "s3":
            return self.s3(flow, state, result)
        return self.clf(flow, state, result, combined=self.preset == "combined")

    def _header(self, flow: http.HTTPFlow, state: FlowState, name: str) -> str | None:
        value = client_headers(flow, state).get(name)
        return None if value is None else self.redactor.header(name, value)

    def _request_line(self, flow: http.HTTPFlow, state: FlowState) -> str:
        target = self.redactor.target(client_target(flow, state), state.operation)
        return f"{flow.request.method} {target} {flow.request.http_version}"

    def json(self, flow: http.HTTPFlow, state: FlowState, result: Outcome) -> str:
        operation = state.operation
        entry: dict[str, Any] = {
            "time": _iso_time(flow.request.timestamp_start),
            "request_id": state.request_id,
            "remote": _remote(flow),
            "user": _user(state),
            "method": flow.request.method,
            "operation": operation.name,
            "bucket": operation.bucket or None,
            "key": self.redactor.key(operation),
            "uri": self.redactor.target(client_target(flow, state), operation),
            "status": result.status,
            "error": result.error_code or None,
            "bytes_in": result.request_bytes,
            "bytes_out": result.response_bytes,
            "duration_ms": round(result.duration * 1000, 3),
            "encryption": state.encryption or None,
            "aborted": result.aborted,
            "user_agent": self._header(flow, state, "user-agent"),
            "trace_id": _trace_id(flow),
        }
        if self.headers:
            entry["headers"] = {
                name: value
                for name in self.headers
                if (value := self._header(flow, state, name)) is not None
            }
        return json.dumps(entry, separators=(",", ":"))

    def clf(self, flow: http.HTTPFlow, state: FlowState, result: Outcome, *, combined: bool) -> str:
        line = (
            f"{bare(_remote(flow))} - {bare(_user(state))}"
            f" {_clf_time(flow.request.timestamp_start)} {quoted(self._request_line(flow, state))}"
            f" {result.status} {result.response_bytes or '-'}"
        )
        if combined:
            line += f" {quoted(self._header(flow, state, 'referer'))}"
            line += f" {quoted(self._header(flow, state, 'user-agent'))}"
        return line

    def s3(self, flow: http.HTTPFlow, state: FlowState, result: Outcome) -> str:
        """Amazon S3 server-access-log fields, in S3's order."""
        request = flow.request
        operation = state.operation
        key = self.redactor.key(operation)
        auth = state.auth
        client = flow.client_conn
        tls = client.tls_established
        fields = [
            "-",  # bucket owner
            bare(operation.bucket),
            _clf_time(request.timestamp_start),
            bare(_remote(flow)),
            bare(_user(state)),  # requester
            bare(state.request_id),
            bare(_s3_operation(flow, state)),
            bare(quote(key, safe="/") if key else None),
            quoted(self._request_line(flow, state)),
            str(result.status),
            bare(result.error_code),
            str(result.response_bytes) if result.response_bytes else "-",
            "-",  # object size
            str(round(result.duration * 1000)),  # total time, ms
            "-",  # turn-around time
            quoted(self._header(flow, state, "referer")),
            quoted(self._header(flow, state, "user-agent")),
            bare(operation.param("versionId") if operation.key else None),
            "-",  # host id
            "SigV4" if auth is not None else "-",
            bare(client.cipher if tls else None),
            ("QueryString" if auth.presigned else "AuthHeader") if auth is not None else "-",
            bare(self._header(flow, state, "host")),
            bare(client.tls_version if tls else None),
            "-",  # access point ARN
            "-",  # ACL required
        ]
        return " ".join(fields)


class AccessLog:
    def __init__(self, config: Config, out: IO[str] | None = None) -> None:
        """``out`` replaces stdout (for tests)."""
        self._config = config
        self._stdout = out
        self._out: IO[str] | None = None
        self._owned: IO[str] | None = None  # a file we opened and must close
        self._formatter: LineFormatter | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_access_log",
            str,
            "",
            "Access log destination: '-' (stdout), 'stderr' or a file to append to "
            "(default: observability.access_log, else off).",
        )
        loader.add_option(
            "gw_access_log_format",
            str,
            "",
            f"Access log preset: {', '.join(FORMATS)} "
            "(default: observability.access_log_format, else json).",
        )
        loader.add_option(
            "gw_access_log_headers",
            Sequence[str],
            [],
            "Request headers added to JSON lines (redacted ones show as REDACTED).",
        )
        loader.add_option(
            "gw_access_log_redact",
            Sequence[str],
            [],
            "Headers (and query parameters of that name) to redact, in addition to the "
            "credentials that always are.",
        )
        loader.add_option(
            "gw_access_log_hide_keys",
            bool,
            False,
            "Keep object keys (and key prefixes) out of the access log.",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & _OPTIONS:
            return
        settings = observability(self._config)
        options = ctx.options
        preset = options.gw_access_log_format or settings.access_log_format
        redactor = Redactor(
            [*options.gw_access_log_redact, *settings.redact_headers],
            hide_keys=options.gw_access_log_hide_keys or settings.redact_object_keys,
        )
        try:
            formatter = LineFormatter(
                preset, redactor, [*options.gw_access_log_headers, *settings.access_log_headers]
            )
        except ValueError as error:
            raise exceptions.OptionsError(f"gw_access_log_format: {error}") from None
        destination = options.gw_access_log or settings.access_log
        self._close()
        self._formatter = formatter
        self._out = self._open(destination)

    def _open(self, destination: str) -> IO[str] | None:
        if not destination:
            return None
        if destination in ("-", "stdout"):
            return self._stdout or sys.stdout
        if destination == "stderr":
            return sys.stderr
        try:
            self._owned = open(destination, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as error:
            raise exceptions.OptionsError(f"gw_access_log: {error}") from None
        return self._owned

    def _close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        self._out = None

    def done(self) -> None:
        self._close()

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        if self._out is None or self._formatter is None:
            return
        state = state_of(flow)
        if state is None or not finish_once(flow, "accesslog"):
            return
        line = self._formatter(flow, state, outcome(flow, state))
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError) as error:  # ValueError: closed stream
            log.error("s3gw: cannot write the access log: %s", error)

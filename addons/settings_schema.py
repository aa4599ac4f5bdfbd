"""The one definition of every gateway setting.

Validation (:func:`normalize`), the reload rules (:func:`changes`), the table in
``docs/CONFIGURATION.md`` and ``config/gateway.schema.json`` all come from
:data:`SETTINGS`. After changing it, regenerate the two files::

    python -m addons.settings_schema --write

(``--check`` exits non-zero when they are stale; a unit test does the same.)

To add a setting: append a :class:`Setting` to :data:`SETTINGS` (its dotted
``path`` is the YAML key; the environment variable follows from it), read it
from the normalized tree in ``addons.settings.parse_settings``, add the field
to ``Settings`` (or a nested dataclass), and regenerate. ``hot=True`` only if
every addon reads it per request (through ``Config.current()``) or reacts to a
``gw_config`` configure call; anything else needs a restart.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "S3GW_"
CONFIG_ENV = "S3GW_CONFIG"

Kind = Literal[
    "string", "url", "integer", "number", "boolean", "names", "credentials", "keys", "policies"
]

_JSON_TYPES: dict[str, str] = {
    "string": "string",
    "url": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "names": "array",
    "credentials": "array",
    "keys": "object",
    "policies": "object",
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_INTEGER = re.compile(r"[+-]?\d+")
# Kept in step with crypto.Algorithm, crypto.PROFILES, addons.accesslog.FORMATS
# and addons.tracing.EXPORTERS by tests/unit/test_settings_schema.py.
ALGORITHMS = ("AES-256-GCM", "CHACHA20-POLY1305")
PROVIDERS = ("aws", "minio", "wasabi", "hetzner", "ceph", "generic")
ACCESS_LOG_FORMATS = ("json", "common", "combined", "s3")
TRACING_EXPORTERS = ("", "none", "console", "otlp-http", "otlp-grpc", "memory")
KEY_ID_PATTERN = "^[A-Za-z0-9_-]{1,32}$"
# Kept in step with addons.settings.BucketPolicy by tests/unit/test_settings_schema.py.
BUCKET_POLICIES = ("encrypt", "passthrough", "refuse")


class SettingsError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class Setting:
    """One configuration key: its YAML path, type, default and reload rule."""

    path: str  # dotted YAML path, e.g. "encryption.chunk_size"
    kind: Kind
    description: str
    default: Any = None  # None: no default (unset, or required)
    required: bool = False
    hot: bool = False  # applied by a reload (SIGHUP, file change) without a restart
    unit: str = ""
    secret: bool = False  # never logged; usually given as <name>_file
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], object] | None = None  # raises ValueError on a bad value
    env: str = ""  # only where the variable does not follow from the path
    reload_note: str = ""  # the docs' reload column, where "yes"/"restart" is not enough

    @property
    def env_var(self) -> str:
        return self.env or ENV_PREFIX + self.path.upper().replace(".", "__")

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


def _chunk_size(value: int) -> None:
    from crypto import CryptoError
    from crypto.format import chunk_size_log2

    try:
        chunk_size_log2(value)
    except CryptoError as error:
        raise ValueError(str(error)) from None


SETTINGS: tuple[Setting, ...] = (
    Setting("listen.host", "string", "Address the gateway listens on.", default="127.0.0.1"),
    Setting(
        "listen.port",
        "integer",
        "Port the gateway listens on.",
        default=8080,
        minimum=0,
        maximum=65535,
    ),
    Setting(
        "backend.url",
        "url",
        "The S3-compatible storage the gateway forwards to (http or https).",
        required=True,
    ),
    Setting(
        "backend.region", "string", "Region used to sign backend requests.", default="us-east-1"
    ),
    Setting(
        "backend.access_key_id",
        "string",
        "Access key the gateway signs backend requests with.",
        required=True,
        secret=True,
    ),
    Setting(
        "backend.secret_access_key",
        "string",
        "Secret of the backend access key.",
        required=True,
        secret=True,
    ),
    Setting(
        "backend.ca_bundle",
        "string",
        "PEM file of the CAs trusted for an https backend (empty: the system's).",
        default="",
    ),
    Setting(
        "backend.connect_timeout",
        "number",
        "Longest wait for a TCP connection to the backend (proxied requests and the "
        "gateway's own requests).",
        default=10.0,
        unit="seconds",
        minimum=0.1,
        maximum=600,
        hot=True,
    ),
    Setting(
        "backend.read_timeout",
        "number",
        "Longest wait for the backend's response headers once a request is sent, and "
        "longest pause within a response body (idle, not total); the client then gets "
        "`ServiceUnavailable` or, once its body has started, a cut connection.",
        default=60.0,
        unit="seconds",
        minimum=0.1,
        maximum=3600,
        hot=True,
    ),
    Setting(
        "backend.retries",
        "integer",
        "Retries of the gateway's own backend requests (HEAD/GET; connection errors, "
        "timeouts, 500/502/503/504) with capped exponential backoff and full jitter. "
        "Proxied client requests are never retried: the client's SDK retries them.",
        default=2,
        minimum=0,
        maximum=10,
        hot=True,
    ),
    Setting(
        "credentials",
        "credentials",
        "Keys clients sign their requests to the gateway with (SigV4): a list of "
        "`access_key_id` + `secret_access_key` (or `secret_access_key_file`).",
        required=True,
        hot=True,
        secret=True,
        env="S3GW_CREDENTIALS",
        reload_note="yes (add, remove, rotate)",
    ),
    Setting(
        "keyring.active",
        "string",
        "Key id that wraps the data keys of new objects; must be in `keyring.keys`. Switching "
        "it to another configured key starts a rotation.",
        required=True,
        hot=True,
    ),
    Setting(
        "keyring.keys",
        "keys",
        "Key-encryption keys by id: `base64` (32 random bytes) or `passphrase` + `salt` "
        "(base64, >= 16 bytes). Keep old keys until objects are re-wrapped.",
        required=True,
        hot=True,
        secret=True,
        env="S3GW_KEYRING__KEYS__<ID>__BASE64",
        reload_note="additions only",
    ),
    Setting(
        "encryption.algorithm",
        "string",
        "AEAD for new objects.",
        default="AES-256-GCM",
        choices=ALGORITHMS,
    ),
    Setting(
        "encryption.chunk_size",
        "integer",
        "Plaintext bytes per encrypted chunk: a power of two, 1 KiB .. 16 MiB.",
        default=65536,
        unit="bytes",
        minimum=1024,
        maximum=16 * 1024 * 1024,
        check=_chunk_size,
    ),
    Setting(
        "encryption.allow_plaintext_reads",
        "boolean",
        "Serve objects stored before the gateway (unencrypted), labelled as such.",
        default=True,
        hot=True,
    ),
    Setting(
        "bucket_policies",
        "policies",
        "What the gateway does with each bucket: a mapping of bucket name or glob pattern "
        "(`*`, `?`, `[...]`) to `encrypt`, `passthrough` (bodies stored as sent, envelopes "
        "still decrypted) or `refuse` (`AccessDenied`). An exact name wins over patterns, "
        "patterns match in file order, other buckets use `encrypt` (docs/SECURITY.md).",
        default=(),
        choices=BUCKET_POLICIES,
        hot=True,
        env="S3GW_BUCKET_POLICIES__<BUCKET>",
    ),
    Setting(
        "provider",
        "string",
        "Metadata budget profile of the backend.",
        default="generic",
        choices=PROVIDERS,
        hot=True,
    ),
    Setting(
        "base_domain",
        "string",
        "Accept virtual-hosted-style requests `<bucket>.<base_domain>` (path style always works).",
    ),
    Setting(
        "max_buffered_body",
        "integer",
        "Largest body of a non-object request (bucket policy, DeleteObjects...) the gateway "
        "buffers to sign; larger ones are refused. Also the most bytes of an unencrypted "
        "object read apart for a ranged GET (ADR 0003).",
        default=8 * 1024 * 1024,
        unit="bytes",
        minimum=1024,
        hot=True,
    ),
    Setting(
        "tls.certificate",
        "string",
        "PEM file with the gateway's certificate chain for TLS clients, leaf first (empty: "
        "mitmproxy's CA signs one).",
        default="",
    ),
    Setting(
        "tls.key",
        "string",
        "PEM file with its private key (empty: in the certificate file).",
        default="",
    ),
    Setting(
        "forward.allowed_hosts",
        "names",
        "Forward/transparent proxy mode: the S3 hosts requests may name, `*` wildcards "
        "(e.g. `*.amazonaws.com`); the backend is the host a request names. A host "
        "`<bucket>.<entry>` for an entry without wildcards (e.g. `s3.eu-west-1.amazonaws.com`) "
        "is virtual-hosted style: its bucket is in the host.",
        default=(),
    ),
    Setting(
        "forward.other_hosts",
        "string",
        "Forward/transparent proxy mode: what happens to requests for other hosts.",
        default="refuse",
        choices=("refuse", "pass"),
    ),
    Setting(
        "observability.metrics_port",
        "integer",
        "Port of the Prometheus `/metrics` endpoint (0: off).",
        default=0,
        minimum=0,
        maximum=65535,
        hot=True,
    ),
    Setting(
        "observability.metrics_host",
        "string",
        "Address of the metrics endpoint (empty: the listen host).",
        default="",
        hot=True,
    ),
    Setting(
        "observability.metrics_buckets",
        "names",
        "Buckets named in metric labels (all others: `_other`).",
        default=(),
        hot=True,
    ),
    Setting(
        "observability.access_log",
        "string",
        "Access log: empty (off), `-` (stdout), `stderr`, or a file to append to.",
        default="",
        hot=True,
    ),
    Setting(
        "observability.access_log_format",
        "string",
        "Access log preset.",
        default="json",
        choices=ACCESS_LOG_FORMATS,
        hot=True,
    ),
    Setting(
        "observability.access_log_headers",
        "names",
        "Request headers added to JSON access log lines.",
        default=(),
        hot=True,
    ),
    Setting(
        "observability.redact_headers",
        "names",
        "Headers redacted in logs and traces, in addition to the built-in list.",
        default=(),
        hot=True,
    ),
    Setting(
        "observability.redact_object_keys",
        "boolean",
        "Keep object keys out of logs and traces.",
        default=False,
        hot=True,
    ),
    Setting(
        "observability.tracing_exporter",
        "string",
        "OpenTelemetry exporter (empty: tracing off; `memory`: spans kept in the process, tests).",
        default="",
        choices=TRACING_EXPORTERS,
        hot=True,
    ),
    Setting(
        "observability.tracing_endpoint",
        "string",
        "Where the exporter sends spans.",
        default="",
        hot=True,
    ),
    Setting(
        "observability.tracing_sample_ratio",
        "number",
        "Share of new traces sampled (a client's sampling decision is followed).",
        default=1.0,
        minimum=0,
        maximum=1,
        hot=True,
    ),
)

BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}


def _sections() -> dict[tuple[str, ...], set[str]]:
    """Every mapping in the tree (``()`` is the top level) and the keys it may hold."""
    sections: dict[tuple[str, ...], set[str]] = {}
    for setting in SETTINGS:
        parts = setting.parts
        for depth in range(len(parts)):
            sections.setdefault(parts[:depth], set()).add(parts[depth])
    return sections


def is_known(parts: list[str] | tuple[str, ...]) -> bool:
    """Whether a path (e.g. from an environment variable) names a setting or lies in one."""
    return any(tuple(parts[: len(s.parts)]) == s.parts[: len(parts)] for s in SETTINGS)


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else repr(value)


def _expected(setting: Setting) -> str:
    text = {
        "string": "a string",
        "url": "an http(s) URL",
        "integer": "an integer",
        "number": "a number",
        "boolean": "a boolean (true/false)",
        "names": "a list of names (or a comma-separated string)",
        "credentials": "a list of access_key_id + secret_access_key",
        "keys": "a mapping of key id to base64 or passphrase + salt",
        "policies": "a mapping of bucket name or pattern to a policy",
    }[setting.kind]
    if setting.kind == "policies":
        text += " (" + ", ".join(repr(c) for c in setting.choices) + ")"
    elif setting.choices:
        text = "one of " + ", ".join(repr(c) for c in setting.choices)
    if setting.unit:
        text += f" ({setting.unit})"
    return text


def _key_name(name: Any) -> str:
    """A mapping key for an error message; not shown unless it looks like a setting name
    (in the credentials and keyring sections it may be a secret put in the wrong place)."""
    text = str(name)
    return repr(text) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", text) else "<hidden>"


def _wrong(setting: Setting, value: Any, problem: str = "") -> SettingsError:
    shown = "<secret>" if setting.secret else _show(value)
    detail = f" ({problem})" if problem else ""
    return SettingsError(
        f"{setting.path}: {shown} is invalid{detail}; expected {_expected(setting)}"
    )


def _coerce(setting: Setting, value: Any) -> Any:
    kind = setting.kind
    if kind in ("string", "url"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _wrong(setting, value)
        value = str(value)
        if setting.choices:
            normalized = value.upper() if setting.path == "encryption.algorithm" else value.lower()
            if normalized not in setting.choices:
                raise _wrong(setting, value, "not allowed")
            value = normalized
        return value
    if kind == "integer":
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(setting, value)
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong(setting, value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        raise _wrong(setting, value)
    if kind == "names":
        if isinstance(value, str):
            items: list[Any] = value.split(",")
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise _wrong(setting, value)
        if any(isinstance(item, dict | list) for item in items):
            raise _wrong(setting, value)
        return tuple(str(item).strip() for item in items if str(item).strip())
    if kind == "credentials":
        return _credentials(setting, value)
    if kind == "policies":
        return _policies(setting, value)
    return _keys(setting, value)


def _credentials(setting: Setting, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise _wrong(setting, value)
    out = []
    for i, entry in enumerate(value):
        where = f"{setting.path}[{i}]"
        if not isinstance(entry, Mapping):
            raise SettingsError(
                f"{where}: expected a mapping with access_key_id, secret_access_key"
            )
        unknown = set(entry) - {"access_key_id", "secret_access_key"}
        if unknown:
            raise SettingsError(f"{where}: unknown key {_key_name(sorted(unknown)[0])}")
        item = {}
        for key in ("access_key_id", "secret_access_key"):
            field = entry.get(key)
            if field is None or field == "":
                raise SettingsError(f"{where}.{key} is required")
            if not isinstance(field, str | int):
                raise SettingsError(f"{where}.{key}: expected a string")
            item[key] = str(field)
        out.append(item)
    if not out:
        raise SettingsError(f"{setting.path}: at least one client access key is required")
    return out


def _policies(setting: Setting, value: Any) -> tuple[tuple[str, str], ...]:
    """``(bucket or pattern, policy)`` pairs in file order (a tuple: order matters)."""
    if isinstance(value, tuple):
        value = dict(value)  # already normalized (a reload compares normalized trees)
    if not isinstance(value, Mapping):
        raise _wrong(setting, value)
    out = []
    for name, policy in value.items():
        where = f"{setting.path}.{name}"
        if not isinstance(name, str) or not name.strip():
            raise SettingsError(f"{setting.path}: {_show(name)} is not a bucket name or pattern")
        if not isinstance(policy, str) or policy.strip().lower() not in setting.choices:
            raise SettingsError(
                f"{where}: {_show(policy)} is invalid; expected {_expected(setting)}"
            )
        out.append((name.strip(), policy.strip().lower()))
    return tuple(out)


def _keys(setting: Setting, value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise _wrong(setting, value)
    if not value:
        raise SettingsError(f"{setting.path}: at least one key is required")
    out = {}
    for key_id, spec in value.items():
        where = f"{setting.path}.{key_id}"
        if not isinstance(spec, Mapping):
            raise SettingsError(f"{where} must be a mapping with base64 or passphrase+salt")
        unknown = set(spec) - {"base64", "passphrase", "salt"}
        if unknown:
            raise SettingsError(f"{where}: unknown key {_key_name(sorted(unknown)[0])}")
        out[str(key_id)] = {str(k): str(v) for k, v in spec.items()}
    return out


def _get(tree: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def normalize(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``tree`` (YAML merged with the environment, ``_file`` keys resolved).

    Returns a tree with every setting present, coerced to its type, defaults
    filled in; raises :class:`SettingsError` naming the key, the value and what
    was expected.
    """
    for section, allowed in _sections().items():
        node = _get(tree, section) if section else tree
        if node is None:
            continue
        where = ".".join(section)
        if not isinstance(node, Mapping):
            # A section holding secrets may have been given one pasted in its place.
            holds_secret = any(s.secret and s.parts[: len(section)] == section for s in SETTINGS)
            shown = "<secret>" if holds_secret else _show(node)
            raise SettingsError(f"{where}: {shown} is invalid; expected a mapping")
        for key in node:
            if str(key) not in allowed:
                name = f"{where}.{key}" if where else str(key)
                raise SettingsError(
                    f"{name}: unknown setting (known here: {', '.join(sorted(allowed))})"
                )
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        value = _get(tree, setting.parts)
        if value is None or (value == "" and setting.required):
            if setting.required:
                raise SettingsError(f"{setting.path} is required")
            value = setting.default
        else:
            value = _coerce(setting, value)
            if setting.check is not None:
                try:
                    setting.check(value)
                except ValueError as error:
                    raise SettingsError(f"{setting.path}: {error}") from None
            if (setting.minimum is not None and value < setting.minimum) or (
                setting.maximum is not None and value > setting.maximum
            ):
                bounds = f"{setting.minimum if setting.minimum is not None else ''} .. " + (
                    f"{setting.maximum}" if setting.maximum is not None else ""
                )
                raise _wrong(setting, value, f"outside {bounds.strip()}")
        node = out
        for part in setting.parts[:-1]:
            node = node.setdefault(part, {})
        node[setting.parts[-1]] = value
    return out


def value_of(tree: Mapping[str, Any], path: str) -> Any:
    """The value of the setting ``path`` in a normalized tree."""
    return _get(tree, BY_PATH[path].parts)


# Reloads --------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    path: str
    text: str  # what changed, without secret values
    allowed: bool  # False: a reload with this change is refused


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """What differs between two normalized trees, and whether a reload may apply it."""
    found: list[Change] = []
    for setting in SETTINGS:
        before, after = _get(old, setting.parts), _get(new, setting.parts)
        if before == after:
            continue
        if setting.kind == "credentials":
            found.append(_credential_change(setting, before, after))
        elif setting.kind == "keys":
            found.extend(_key_changes(setting, before, after))
        else:
            shown = "changed" if setting.secret else f"{_show(before)} -> {_show(after)}"
            if setting.hot:
                found.append(Change(setting.path, f"{setting.path}: {shown}", True))
            else:
                found.append(
                    Change(setting.path, f"{setting.path}: {shown} needs a restart", False)
                )
    return found


def _credential_change(setting: Setting, before: Any, after: Any) -> Change:
    old = {c["access_key_id"]: c["secret_access_key"] for c in before}
    new = {c["access_key_id"]: c["secret_access_key"] for c in after}
    parts = []
    for label, ids in (
        ("added", sorted(new.keys() - old.keys())),
        ("removed", sorted(old.keys() - new.keys())),
        ("secret changed for", sorted(k for k in old.keys() & new.keys() if old[k] != new[k])),
    ):
        if ids:
            parts.append(f"{label} {', '.join(ids)}")
    return Change(setting.path, f"{setting.path}: {'; '.join(parts) or 'reordered'}", True)


def _key_changes(setting: Setting, before: Any, after: Any) -> list[Change]:
    found = []
    added = sorted(after.keys() - before.keys())
    if added:
        found.append(Change(setting.path, f"{setting.path}: added {', '.join(added)}", True))
    for key_id in sorted(before.keys() - after.keys()):
        found.append(
            Change(
                setting.path,
                f"{setting.path}: removing {key_id} is refused (objects may still be "
                "wrapped with it; re-wrap them first, then restart without it)",
                False,
            )
        )
    for key_id in sorted(k for k in before.keys() & after.keys() if before[k] != after[k]):
        found.append(
            Change(
                setting.path,
                f"{setting.path}: the material of {key_id} changed, which is refused "
                "(add the new key under a new id instead)",
                False,
            )
        )
    return found


# Generated files ------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_PATH = REPO_ROOT / "docs" / "CONFIGURATION.md"
SCHEMA_PATH = REPO_ROOT / "config" / "gateway.schema.json"

_DOCS_INTRO = f"""\
# Configuration

<!-- Generated by `python -m addons.settings_schema --write` from
     addons/settings_schema.py; edit that file, not this one. -->

The gateway reads one YAML file (`--config`, `--set gw_config=...` or
`${CONFIG_ENV}`); `config/gateway.example.yaml` is a commented example and
`config/gateway.schema.json` its JSON Schema (for editors and CI).

- **Environment**: every key can be set as `{ENV_PREFIX}<PATH>` with `__` between
  levels, e.g. `S3GW_BACKEND__URL`; the environment wins over the file. Lists of
  names may be given comma-separated. Client credentials can be given as
  `S3GW_CREDENTIALS="AKID1:SECRET1,AKID2:SECRET2"`.
- **Secrets from files**: any string key `name` may be given as `name_file: /path`
  instead; the file's content, stripped, is the value. A file readable by all users or
  writable by group or others is refused (`chmod 600`, or `640`), as OpenSSH does
  for private keys.
- **Invalid configuration**: the gateway does not start; the message names the
  key, the value (never a secret's) and what was expected. Unknown keys are errors.
- **Reload**: on `SIGHUP`, and when the file's modification time changes (checked
  every `gw_config_poll` seconds, default 2; 0 turns polling off), the gateway
  reads the file and the environment again. If the result is valid and changes only
  settings marked *yes* below, it is applied and the changes are logged (secret
  values never are); otherwise the whole reload is refused with the reason logged and
  the running configuration stays. Requests in progress are not interrupted: the
  settings a reload may change are safe to change between two steps of a request
  (a keyring only grows, so a key a request has started with stays available).
  `S3GW_*` variables that name no setting (such as `S3GW_CONFIG`) are ignored.

| Key | Type | Unit | Default | Environment variable | Reload | Description |
| --- | --- | --- | --- | --- | --- | --- |
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_docs() -> str:
    rows = []
    for s in SETTINGS:
        kind = s.kind + (
            " (" + ", ".join(f"`{c}`" for c in s.choices if c) + ")" if s.choices else ""
        )
        if s.required:
            default = "required"
        elif s.kind == "policies":
            default = "`{}`"
        elif s.default is None:
            default = "unset"
        elif isinstance(s.default, tuple):
            default = "`[]`"
        else:
            default = f"`{json.dumps(s.default)}`"
        reload = s.reload_note or ("yes" if s.hot else "restart")
        secret = " Secret: never logged; usually `_file`." if s.secret else ""
        rows.append(
            f"| `{s.path}` | {_cell(kind)} | {s.unit} | {default} | `{s.env_var}` | {reload} "
            f"| {_cell(s.description + secret)} |"
        )
    return _DOCS_INTRO + "\n".join(rows) + "\n"


def _leaf_schema(s: Setting) -> dict[str, Any]:
    if s.kind == "credentials":
        return {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "access_key_id": {"type": "string", "minLength": 1},
                    "access_key_id_file": {"type": "string"},
                    "secret_access_key": {"type": "string", "minLength": 1},
                    "secret_access_key_file": {"type": "string"},
                },
                "allOf": [
                    {"anyOf": [{"required": [k]}, {"required": [k + "_file"]}]}
                    for k in ("access_key_id", "secret_access_key")
                ],
            },
        }
    if s.kind == "keys":
        kek: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "base64": {"type": "string", "description": "32 random bytes, base64"},
                "base64_file": {"type": "string"},
                "passphrase": {"type": "string", "minLength": 1},
                "passphrase_file": {"type": "string"},
                "salt": {"type": "string", "description": "base64, at least 16 bytes"},
                "salt_file": {"type": "string"},
            },
        }
        return {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": KEY_ID_PATTERN},
            "additionalProperties": kek,
        }
    if s.kind == "policies":
        return {
            "type": "object",
            "propertyNames": {"minLength": 1},
            "additionalProperties": {"enum": list(s.choices)},
            "default": {},
            "description": s.description,
        }
    schema: dict[str, Any] = {"type": _JSON_TYPES[s.kind]}
    if s.kind == "names":
        schema = {"type": ["array", "string"], "items": {"type": "string"}}
    if s.kind == "url":
        schema["pattern"] = "^https?://"
    if s.choices:
        schema = {"enum": list(s.choices)}
    if s.minimum is not None:
        schema["minimum"] = s.minimum
    if s.maximum is not None:
        schema["maximum"] = s.maximum
    if s.path == "keyring.active":
        schema["pattern"] = KEY_ID_PATTERN
    if s.default is not None:
        schema["default"] = list(s.default) if isinstance(s.default, tuple) else s.default
    schema["description"] = s.description + (f" Unit: {s.unit}." if s.unit else "")
    return schema


def render_json_schema() -> str:
    root: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "S3 encryption gateway configuration",
        "description": "Generated by `python -m addons.settings_schema --write`.",
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }
    for s in SETTINGS:
        node = root
        for part in s.parts[:-1]:
            node = node["properties"].setdefault(
                part, {"type": "object", "additionalProperties": False, "properties": {}}
            )
        name = s.parts[-1]
        node["properties"][name] = _leaf_schema(s)
        if s.kind in ("string", "url"):
            node["properties"][name + "_file"] = {
                "type": "string",
                "description": f"A file whose content is {name}.",
            }
        if s.required:
            requirement: dict[str, Any] = (
                {"anyOf": [{"required": [name]}, {"required": [name + "_file"]}]}
                if s.kind in ("string", "url")
                else {"required": [name]}
            )
            node.setdefault("allOf", []).append(requirement)
        # A section holding a required setting is required in its parent.
        parent = root
        for depth, part in enumerate(s.parts[:-1]):
            if s.required and {"required": [part]} not in parent.setdefault("allOf", []):
                parent["allOf"].append({"required": [part]})
            parent = parent["properties"][s.parts[depth]]
    return json.dumps(root, indent=2) + "\n"


def generated() -> dict[Path, str]:
    return {DOCS_PATH: render_docs(), SCHEMA_PATH: render_json_schema()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m addons.settings_schema",
        description="Generate docs/CONFIGURATION.md and config/gateway.schema.json.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write the generated files")
    mode.add_argument("--check", action="store_true", help="fail if they are stale")
    args = parser.parse_args(argv)
    stale = [
        path for path, text in generated().items() if not path.exists() or path.read_text() != text
    ]
    if args.check:
        for path in stale:
            print(
                f"stale: {path.relative_to(REPO_ROOT)} "
                "(run python -m addons.settings_schema --write)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

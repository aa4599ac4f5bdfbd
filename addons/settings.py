"""Gateway settings: a YAML file, overridable key by key from environment variables.

Every leaf of the YAML tree can be set from the environment as
``S3GW_<PATH>`` with ``__`` between levels, e.g. ``S3GW_BACKEND__URL`` or
``S3GW_KEYRING__KEYS__K1__BASE64``. Any string leaf ``name`` may instead be
given as ``name_file`` (a path whose content, stripped, is the value), so
secrets can come from mounted files. Client credentials can also be given as
``S3GW_CREDENTIALS="AKID1:SECRET1,AKID2:SECRET2"``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from crypto import (
    DEFAULT_CHUNK_SIZE,
    Algorithm,
    CryptoError,
    ProviderProfile,
    StaticKeyring,
    get_profile,
    kek_from_passphrase,
)
from crypto.format import chunk_size_log2

ENV_PREFIX = "S3GW_"
CONFIG_ENV = "S3GW_CONFIG"


class SettingsError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class Backend:
    url: str
    region: str
    access_key_id: str
    secret_access_key: str

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class Observability:
    """Metrics, access log and tracing (docs/OBSERVABILITY.md).

    Each has a mitmproxy ``gw_*`` option too, which wins when it is set.
    """

    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_host: str = ""  # "": the gateway's listen host
    metrics_buckets: tuple[str, ...] = ()  # buckets that get their own label value
    access_log: str = ""  # "": off, "-": stdout, "stderr", or a file path
    access_log_format: str = "json"
    access_log_headers: tuple[str, ...] = ()  # request headers added to JSON lines
    redact_headers: tuple[str, ...] = ()  # in addition to the built-in list
    redact_object_keys: bool = False  # keep object keys out of logs and traces
    tracing_exporter: str = ""  # "": tracing off
    tracing_endpoint: str = ""
    tracing_sample_ratio: float = 1.0


@dataclass(frozen=True)
class Settings:
    backend: Backend
    credentials: Mapping[str, str]
    keyring: StaticKeyring
    algorithm: Algorithm = Algorithm.AES_256_GCM
    chunk_size: int = DEFAULT_CHUNK_SIZE
    provider: ProviderProfile = field(default_factory=lambda: get_profile("generic"))
    allow_plaintext_reads: bool = True
    # Virtual-hosted-style requests: "<bucket>.<base_domain>".
    base_domain: str | None = None
    # Bodies of non-object requests (bucket policies, DeleteObjects...) are
    # buffered to sign them; anything larger is refused.
    max_buffered_body: int = 8 * 1024 * 1024
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    observability: Observability = field(default_factory=Observability)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        if path == ["credentials"]:
            pairs = [item.split(":", 1) for item in value.split(",") if item.strip()]
            if any(len(p) != 2 for p in pairs):
                raise SettingsError("S3GW_CREDENTIALS must be AKID:SECRET[,AKID:SECRET...]")
            tree["credentials"] = [
                {"access_key_id": a.strip(), "secret_access_key": s.strip()} for a, s in pairs
            ]
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _resolve_files(node: Any, where: str = "") -> Any:
    """Replace every ``name_file: path`` leaf by ``name: <file content>``."""
    if isinstance(node, list):
        return [_resolve_files(item, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        key = str(key)
        if key.endswith("_file") and isinstance(value, str):
            try:
                out[key[: -len("_file")]] = Path(value).read_text().strip()
            except OSError as error:
                raise SettingsError(f"{where}{key}: {error}") from None
        else:
            out[key] = _resolve_files(value, f"{where}{key}.")
    return out


def _require(tree: Mapping[str, Any], key: str, where: str) -> str:
    value = tree.get(key)
    if value is None or value == "":
        raise SettingsError(f"{where}{key} is required")
    return str(value)


def _kek(key_id: str, spec: Any) -> bytes:
    where = f"keyring.keys.{key_id}"
    if not isinstance(spec, Mapping):
        raise SettingsError(f"{where} must be a mapping with base64 or passphrase+salt")
    try:
        if "base64" in spec:
            return base64.b64decode(str(spec["base64"]), validate=True)
        if "passphrase" in spec:
            salt = base64.b64decode(_require(spec, "salt", where + "."), validate=True)
            return kek_from_passphrase(str(spec["passphrase"]), salt)
    except (binascii.Error, ValueError) as error:
        raise SettingsError(f"{where}: {error}") from None
    raise SettingsError(f"{where} needs base64 (32 bytes) or passphrase + salt (base64)")


def parse_settings(tree: Mapping[str, Any]) -> Settings:
    tree = _resolve_files(dict(tree))
    backend_tree = tree.get("backend") or {}
    backend = Backend(
        url=_require(backend_tree, "url", "backend.").rstrip("/"),
        region=str(backend_tree.get("region") or "us-east-1"),
        access_key_id=_require(backend_tree, "access_key_id", "backend."),
        secret_access_key=_require(backend_tree, "secret_access_key", "backend."),
    )
    if backend.scheme not in ("http", "https") or not backend.host:
        raise SettingsError("backend.url must be an http(s) URL")
    credentials: dict[str, str] = {}
    for i, entry in enumerate(tree.get("credentials") or []):
        where = f"credentials[{i}]."
        credentials[_require(entry, "access_key_id", where)] = _require(
            entry, "secret_access_key", where
        )
    if not credentials:
        raise SettingsError("credentials: at least one client access key is required")
    keyring_tree = tree.get("keyring") or {}
    keys = keyring_tree.get("keys") or {}
    if not keys:
        raise SettingsError("keyring.keys: at least one key is required")
    encryption = tree.get("encryption") or {}
    listen = tree.get("listen") or {}
    try:
        keyring = StaticKeyring(
            {str(kid): _kek(str(kid), spec) for kid, spec in keys.items()},
            _require(keyring_tree, "active", "keyring."),
        )
        algorithm = Algorithm.from_label(str(encryption.get("algorithm", "AES-256-GCM")))
        chunk_size = int(encryption.get("chunk_size", DEFAULT_CHUNK_SIZE))
        chunk_size_log2(chunk_size)
        provider = get_profile(str(tree.get("provider", "generic")))
    except (CryptoError, ValueError) as error:
        raise SettingsError(str(error)) from None
    return Settings(
        backend=backend,
        credentials=credentials,
        keyring=keyring,
        algorithm=algorithm,
        chunk_size=chunk_size,
        provider=provider,
        allow_plaintext_reads=_bool(encryption.get("allow_plaintext_reads", True)),
        base_domain=tree.get("base_domain") or None,
        max_buffered_body=int(tree.get("max_buffered_body", 8 * 1024 * 1024)),
        listen_host=str(listen.get("host", "127.0.0.1")),
        listen_port=int(listen.get("port", 8080)),
        observability=_observability(tree.get("observability") or {}),
    )


def _names(value: Any) -> tuple[str, ...]:
    """A list of names from YAML (a list) or the environment (comma-separated)."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return tuple(str(item).strip() for item in items if str(item).strip())


def _observability(tree: Mapping[str, Any]) -> Observability:
    where = "observability."
    try:
        observability = Observability(
            metrics_port=int(tree.get("metrics_port", 0)),
            metrics_host=str(tree.get("metrics_host") or ""),
            metrics_buckets=_names(tree.get("metrics_buckets")),
            access_log=str(tree.get("access_log") or ""),
            access_log_format=str(tree.get("access_log_format") or "json"),
            access_log_headers=_names(tree.get("access_log_headers")),
            redact_headers=_names(tree.get("redact_headers")),
            redact_object_keys=_bool(tree.get("redact_object_keys", False)),
            tracing_exporter=str(tree.get("tracing_exporter") or ""),
            tracing_endpoint=str(tree.get("tracing_endpoint") or ""),
            tracing_sample_ratio=float(tree.get("tracing_sample_ratio", 1.0)),
        )
    except (TypeError, ValueError) as error:
        raise SettingsError(f"observability: {error}") from None
    if not 0 <= observability.metrics_port <= 65535:
        raise SettingsError(f"{where}metrics_port must be 0..65535")
    if not 0.0 <= observability.tracing_sample_ratio <= 1.0:
        raise SettingsError(f"{where}tracing_sample_ratio must be between 0 and 1")
    return observability


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def load_settings(path: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file at ``path`` (may be None) and apply environment overrides."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise SettingsError(f"{path}: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping")
        tree = loaded or {}
    return parse_settings(_deep_merge(tree, _env_overrides(environ)))

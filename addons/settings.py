"""Gateway settings: a YAML file, overridable key by key from environment variables.

Every leaf of the YAML tree can be set from the environment as
``S3GW_<PATH>`` with ``__`` between levels, e.g. ``S3GW_BACKEND__URL`` or
``S3GW_KEYRING__KEYS__K1__BASE64``. Any string leaf ``name`` may instead be
given as ``name_file`` (a path whose content, stripped, is the value), so
secrets can come from mounted files (refused if readable by all users or writable by
others). Client credentials can also be given as
``S3GW_CREDENTIALS="AKID1:SECRET1,AKID2:SECRET2"``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from addons.settings_schema import CONFIG_ENV as CONFIG_ENV
from addons.settings_schema import ENV_PREFIX as ENV_PREFIX
from addons.settings_schema import SettingsError as SettingsError
from addons.settings_schema import is_known, normalize, value_of
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


@dataclass(frozen=True)
class Backend:
    url: str
    region: str
    access_key_id: str
    secret_access_key: str
    ca_bundle: str = ""  # PEM file of CAs trusted for an https backend ("": the system's)
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 60.0  # seconds: response headers, and any pause in a body
    retries: int = 2  # of the gateway's own idempotent requests (addons/backend.py)

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
class Tls:
    """The gateway's own certificate for TLS clients ("": mitmproxy's CA signs one)."""

    certificate: str = ""  # PEM file: the certificate chain, leaf first
    key: str = ""  # PEM file: its private key ("": in the certificate file)


@dataclass(frozen=True)
class Forward:
    """Forward (and transparent) proxy mode: the backend is the host a request names."""

    allowed_hosts: tuple[str, ...] = ()  # S3 host patterns, "*" wildcards: *.amazonaws.com
    other_hosts: str = "refuse"  # other hosts: "refuse" (403) or "pass" (untouched)


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


class BucketPolicy(enum.Enum):
    """What the gateway does with the objects of a bucket (docs/adr/0007-per-bucket-policy.md)."""

    ENCRYPT = "encrypt"  # bodies encrypted on the way in (the default)
    PASSTHROUGH = "passthrough"  # bodies stored as sent; stored envelopes still decrypted
    REFUSE = "refuse"  # every request naming the bucket is AccessDenied


_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class BucketPolicies:
    """``bucket_policies``: exact bucket names, then glob patterns in file order."""

    exact: Mapping[str, BucketPolicy] = field(default_factory=lambda: MappingProxyType({}))
    patterns: tuple[tuple[str, BucketPolicy], ...] = ()

    @classmethod
    def from_pairs(cls, pairs: tuple[tuple[str, str], ...]) -> BucketPolicies:
        exact: dict[str, BucketPolicy] = {}
        patterns: list[tuple[str, BucketPolicy]] = []
        for name, policy in pairs:
            if _GLOB_CHARACTERS.isdisjoint(name):
                exact[name] = BucketPolicy(policy)
            else:
                patterns.append((name, BucketPolicy(policy)))
        return cls(MappingProxyType(exact), tuple(patterns))

    def policy_for(self, bucket: str) -> BucketPolicy:
        policy = self.exact.get(bucket)
        if policy is not None:
            return policy
        for pattern, policy in self.patterns:
            # Case-sensitive, like bucket names; fnmatch's "*" also crosses dots.
            if fnmatchcase(bucket, pattern):
                return policy
        return BucketPolicy.ENCRYPT


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
    tls: Tls = field(default_factory=Tls)
    forward: Forward = field(default_factory=Forward)
    bucket_policies: BucketPolicies = field(default_factory=BucketPolicies)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``S3GW_*`` variables, as a tree.

    Variables that name no setting are ignored: the prefix is shared with
    command-line defaults such as ``S3GW_CONFIG``.
    """
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path or not is_known(path):
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
                _check_secret_file(value)
                out[key[: -len("_file")]] = Path(value).read_text().strip()
            except OSError as error:
                raise SettingsError(f"{where}{key}: {error}") from None
            except SettingsError as error:
                raise SettingsError(f"{where}{key}: {error}") from None
        else:
            out[key] = _resolve_files(value, f"{where}{key}.")
    return out


def _check_secret_file(path: str) -> None:
    """Refuse a secret file others may change or read, as OpenSSH does for private keys.

    The mode of the file itself counts (``stat`` follows symlinks, as in
    Kubernetes secret volumes, whose ``defaultMode`` 0440 or 0400 passes).
    """
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = "writable by other users"
    elif mode & stat.S_IROTH:
        problem = "readable by all users"
    else:
        return
    raise SettingsError(
        f"{path} is {problem} (mode {mode:04o}); a secret file must not be: "
        f"chmod 600 {path} (or 640 for a group the gateway runs in)"
    )


def _kek(key_id: str, spec: Mapping[str, str]) -> bytes:
    where = f"keyring.keys.{key_id}"
    try:
        if "base64" in spec:
            return base64.b64decode(spec["base64"], validate=True)
        if "passphrase" in spec:
            if not spec.get("salt"):
                raise SettingsError(f"{where}.salt is required")
            return kek_from_passphrase(
                spec["passphrase"], base64.b64decode(spec["salt"], validate=True)
            )
    except (binascii.Error, ValueError) as error:
        raise SettingsError(f"{where}: {error}") from None
    raise SettingsError(f"{where} needs base64 (32 bytes) or passphrase + salt (base64)")


@dataclass(frozen=True)
class LoadedConfig:
    """Settings and the normalized tree they were made from (to compare on reload)."""

    settings: Settings
    tree: Mapping[str, Any]


def parse_config(tree: Mapping[str, Any]) -> LoadedConfig:
    """Validate a configuration tree (see addons/settings_schema.py) and build Settings."""
    tree = normalize(_resolve_files(dict(tree)))

    def get(path: str) -> Any:
        return value_of(tree, path)

    backend = Backend(
        url=get("backend.url").rstrip("/"),
        region=get("backend.region") or "us-east-1",
        access_key_id=get("backend.access_key_id"),
        secret_access_key=get("backend.secret_access_key"),
        ca_bundle=get("backend.ca_bundle"),
        connect_timeout=get("backend.connect_timeout"),
        read_timeout=get("backend.read_timeout"),
        retries=get("backend.retries"),
    )
    if backend.scheme not in ("http", "https") or not backend.host:
        raise SettingsError(f"backend.url: {backend.url!r} is invalid; expected an http(s) URL")
    credentials = {c["access_key_id"]: c["secret_access_key"] for c in get("credentials")}
    try:
        keyring = StaticKeyring(
            {kid: _kek(kid, spec) for kid, spec in get("keyring.keys").items()},
            get("keyring.active"),
        )
        algorithm = Algorithm.from_label(get("encryption.algorithm"))
        chunk_size = get("encryption.chunk_size")
        chunk_size_log2(chunk_size)
        provider = get_profile(get("provider"))
    except (CryptoError, ValueError) as error:
        raise SettingsError(str(error)) from None
    tls = Tls(certificate=get("tls.certificate"), key=get("tls.key"))
    if tls.key and not tls.certificate:
        raise SettingsError("tls.key needs tls.certificate")
    settings = Settings(
        backend=backend,
        credentials=credentials,
        keyring=keyring,
        algorithm=algorithm,
        chunk_size=chunk_size,
        provider=provider,
        allow_plaintext_reads=get("encryption.allow_plaintext_reads"),
        base_domain=get("base_domain") or None,
        max_buffered_body=get("max_buffered_body"),
        listen_host=get("listen.host"),
        listen_port=get("listen.port"),
        observability=Observability(
            **{name: get(f"observability.{name}") for name in Observability.__dataclass_fields__}
        ),
        tls=tls,
        forward=Forward(
            allowed_hosts=tuple(host.lower() for host in get("forward.allowed_hosts")),
            other_hosts=get("forward.other_hosts"),
        ),
        bucket_policies=BucketPolicies.from_pairs(get("bucket_policies")),
    )
    return LoadedConfig(settings, tree)


def parse_settings(tree: Mapping[str, Any]) -> Settings:
    return parse_config(tree).settings


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
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
    return parse_config(_deep_merge(tree, _env_overrides(environ)))


def load_settings(path: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file at ``path`` (may be None) and apply environment overrides."""
    return load_config(path, environ).settings

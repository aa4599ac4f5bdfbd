"""The shipped example configuration and the settings loader agree."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from addons.settings import (
    BucketPolicy,
    SettingsError,
    load_settings,
    parse_config,
    parse_settings,
)
from addons.settings_schema import changes
from tests.unit.configs import EXAMPLE, minimal_config


def test_example_config_loads_with_its_secret_files(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    secrets = {
        "/run/secrets/backend-secret-key": "backend-secret",
        "/run/secrets/client-1-secret-key": "client-secret",
        "/run/secrets/kek-k2": base64.b64encode(b"x" * 32).decode(),
        "/run/secrets/kek-k1-passphrase": "correct horse battery staple",
    }
    for original, value in secrets.items():
        path = tmp_path / Path(original).name
        path.write_text(value + "\n")
        path.chmod(0o600)  # secret files readable by all are refused
        text = text.replace(original, str(path))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    settings = load_settings(str(config), environ={})
    assert settings.backend.secret_access_key == "backend-secret"
    assert settings.credentials == {"GWEXAMPLEACCESSKEY01": "client-secret"}
    assert settings.keyring.active_key_id == "k2"
    assert settings.keyring.key_ids() == {"k1", "k2"}
    assert settings.listen_port == 8080


def test_environment_overrides_every_level(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(minimal_config()))
    settings = load_settings(
        str(config),
        environ={
            "S3GW_BACKEND__URL": "https://s3.example.com",
            "S3GW_ENCRYPTION__CHUNK_SIZE": "1048576",
            "S3GW_CREDENTIALS": "AK1:SK1,AK2:SK2",
        },
    )
    assert settings.backend.url == "https://s3.example.com"
    assert settings.backend.port == 443
    assert settings.chunk_size == 1048576
    assert settings.credentials == {"AK1": "SK1", "AK2": "SK2"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backend": {"url": "ftp://x"}}, "backend.url"),
        ({"credentials": []}, "credentials"),
        ({"keyring": {"active": "nope"}}, "nope"),
        ({"encryption": {"chunk_size": 1000}}, "power of two"),
        ({"encryption": {"algorithm": "DES"}}, "not allowed"),
        ({"provider": "dropbox"}, "provider"),
    ],
)
def test_invalid_settings_name_the_problem(change: dict[str, object], message: str) -> None:
    tree = minimal_config()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}  # type: ignore[dict-item]
        else:
            tree[key] = value
    with pytest.raises(SettingsError, match=message):
        parse_settings(tree)


def test_observability_settings_from_yaml_and_environment(tmp_path: Path) -> None:
    tree = {**minimal_config(), "observability": {"metrics_port": 9090, "redact_headers": ["x-a"]}}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(tree))
    settings = load_settings(
        str(config),
        environ={
            "S3GW_OBSERVABILITY__METRICS_BUCKETS": "public, shared",
            "S3GW_OBSERVABILITY__REDACT_OBJECT_KEYS": "true",
            "S3GW_OBSERVABILITY__TRACING_SAMPLE_RATIO": "0.25",
        },
    )
    observability = settings.observability
    assert observability.metrics_port == 9090
    assert observability.metrics_buckets == ("public", "shared")
    assert observability.redact_headers == ("x-a",)
    assert observability.redact_object_keys is True
    assert observability.tracing_sample_ratio == 0.25
    assert observability.access_log == "" and observability.tracing_exporter == ""
    assert parse_settings(minimal_config()).observability.metrics_port == 0


@pytest.mark.parametrize(
    "observability",
    [{"metrics_port": 70000}, {"metrics_port": "x"}, {"tracing_sample_ratio": 1.5}],
)
def test_invalid_observability_settings(observability: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match="observability"):
        parse_settings({**minimal_config(), "observability": observability})


def test_bucket_policies_exact_names_win_patterns_in_order(tmp_path: Path) -> None:
    tree = {
        **minimal_config(),
        "bucket_policies": {
            "logs-*": "passthrough",
            "logs-audit": "Encrypt",
            "logs-a*": "refuse",  # after "logs-*": never reached
            "old-?": "refuse",
        },
    }
    policies = parse_settings(tree).bucket_policies
    assert policies.policy_for("logs-web") is BucketPolicy.PASSTHROUGH
    assert policies.policy_for("logs-archive") is BucketPolicy.PASSTHROUGH
    assert policies.policy_for("logs-audit") is BucketPolicy.ENCRYPT
    assert policies.policy_for("old-1") is BucketPolicy.REFUSE
    assert policies.policy_for("old-12") is BucketPolicy.ENCRYPT
    assert policies.policy_for("data") is BucketPolicy.ENCRYPT  # the default
    assert parse_settings(minimal_config()).bucket_policies.policy_for("x") is BucketPolicy.ENCRYPT
    # From the environment, merged into the file's mapping.
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    settings = load_settings(str(config), environ={"S3GW_BUCKET_POLICIES__DATA": "refuse"})
    assert settings.bucket_policies.policy_for("data") is BucketPolicy.REFUSE
    assert settings.bucket_policies.policy_for("logs-web") is BucketPolicy.PASSTHROUGH


@pytest.mark.parametrize(
    "policies", [{"b": "encrypted"}, {"b": None}, ["b"], "b=refuse", {"": "refuse"}]
)
def test_invalid_bucket_policies_are_refused(policies: object) -> None:
    with pytest.raises(SettingsError, match="bucket_policies"):
        parse_settings({**minimal_config(), "bucket_policies": policies})


def test_bucket_policy_order_is_a_reloadable_change() -> None:
    first = {"a*": "refuse", "ab*": "passthrough"}
    second = dict(reversed(first.items()))
    old = parse_config({**minimal_config(), "bucket_policies": first})
    new = parse_config({**minimal_config(), "bucket_policies": second})
    assert old.settings.bucket_policies.policy_for("abc") is BucketPolicy.REFUSE
    assert new.settings.bucket_policies.policy_for("abc") is BucketPolicy.PASSTHROUGH
    found = changes(old.tree, new.tree)
    assert [(c.path, c.allowed) for c in found] == [("bucket_policies", True)]


SECRET = "do-not-print-me-0123456789"


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "readable by all users"),
        (0o604, "readable by all users"),
        (0o620, "writable by other users"),
        (0o602, "writable by other users"),
        (0o666, "writable by other users"),
    ],
)
def test_secret_files_others_may_read_or_change_are_refused(
    tmp_path: Path, mode: int, problem: str
) -> None:
    secret = tmp_path / "backend-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(mode)
    tree = minimal_config()
    tree["backend"] = {**tree["backend"], "secret_access_key_file": str(secret)}  # type: ignore[dict-item]
    del tree["backend"]["secret_access_key"]  # type: ignore[attr-defined]
    with pytest.raises(SettingsError) as caught:
        parse_settings(tree)
    message = str(caught.value)
    assert message.startswith("backend.secret_access_key_file: ")
    assert str(secret) in message and problem in message and f"{mode:04o}" in message
    assert f"chmod 600 {secret}" in message
    assert SECRET not in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_private_secret_files_are_read_also_through_symlinks(tmp_path: Path, mode: int) -> None:
    # Kubernetes secret volumes: a symlink (0777 itself) to a file with defaultMode.
    data = tmp_path / "..data"
    data.mkdir()
    kek = data / "kek"
    kek.write_text(base64.b64encode(b"s" * 32).decode() + "\n")
    kek.chmod(mode)
    link = tmp_path / "kek"
    link.symlink_to(kek)
    tree = minimal_config()
    tree["keyring"] = {"active": "k1", "keys": {"k1": {"base64_file": str(link)}}}
    assert parse_settings(tree).keyring.key_ids() == {"k1"}
    kek.chmod(0o644)
    with pytest.raises(SettingsError, match=r"keyring\.keys\.k1\.base64_file: .*chmod 600"):
        parse_settings(tree)

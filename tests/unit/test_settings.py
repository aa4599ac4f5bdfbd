"""The shipped example configuration and the settings loader agree."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from addons.settings import SettingsError, load_settings, parse_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.example.yaml"


def _minimal() -> dict[str, object]:
    return {
        "backend": {"url": "http://127.0.0.1:9000", "access_key_id": "a", "secret_access_key": "b"},
        "credentials": [{"access_key_id": "AK", "secret_access_key": "SK"}],
        "keyring": {
            "active": "k1",
            "keys": {"k1": {"base64": base64.b64encode(b"k" * 32).decode()}},
        },
    }


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
    config.write_text(yaml.safe_dump(_minimal()))
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
    tree = _minimal()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}  # type: ignore[dict-item]
        else:
            tree[key] = value
    with pytest.raises(SettingsError, match=message):
        parse_settings(tree)


def test_observability_settings_from_yaml_and_environment(tmp_path: Path) -> None:
    tree = {**_minimal(), "observability": {"metrics_port": 9090, "redact_headers": ["x-a"]}}
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
    assert parse_settings(_minimal()).observability.metrics_port == 0


@pytest.mark.parametrize(
    "observability",
    [{"metrics_port": 70000}, {"metrics_port": "x"}, {"tracing_sample_ratio": 1.5}],
)
def test_invalid_observability_settings(observability: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match="observability"):
        parse_settings({**_minimal(), "observability": observability})

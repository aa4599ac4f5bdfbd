"""The settings schema: generated files are current, validation names key, value and type."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from addons import settings_schema
from addons.accesslog import FORMATS
from addons.settings import (
    BucketPolicy,
    Observability,
    SettingsError,
    load_config,
    parse_settings,
)
from addons.settings_schema import SETTINGS, changes, generated, normalize
from addons.tracing import EXPORTERS
from crypto import Algorithm
from crypto.profiles import PROFILES
from tests.unit.configs import EXAMPLE, minimal_config


def test_generated_docs_and_json_schema_are_current() -> None:
    for path, text in generated().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run python -m addons.settings_schema --write"
        )
    assert settings_schema.main(["--check"]) == 0


def test_every_setting_is_in_the_docs_with_its_environment_variable() -> None:
    docs = settings_schema.DOCS_PATH.read_text()
    for setting in SETTINGS:
        assert f"| `{setting.path}` |" in docs
        assert f"`{setting.env_var}`" in docs


def test_choices_match_the_code_that_uses_them() -> None:
    assert set(settings_schema.ALGORITHMS) == {a.label for a in Algorithm}
    assert set(settings_schema.PROVIDERS) == set(PROFILES)
    assert settings_schema.ACCESS_LOG_FORMATS == FORMATS
    assert set(settings_schema.TRACING_EXPORTERS) - {""} == set(EXPORTERS)
    assert tuple(p.value for p in BucketPolicy) == settings_schema.BUCKET_POLICIES


def test_defaults_match_the_settings_dataclasses() -> None:
    settings = parse_settings(minimal_config())
    for name, spec in Observability.__dataclass_fields__.items():
        schema_default = settings_schema.BY_PATH[f"observability.{name}"].default
        assert spec.default == schema_default, name
        assert getattr(settings.observability, name) == schema_default
    assert settings.chunk_size == settings_schema.BY_PATH["encryption.chunk_size"].default
    assert settings.listen_port == settings_schema.BY_PATH["listen.port"].default
    assert settings.max_buffered_body == settings_schema.BY_PATH["max_buffered_body"].default


def test_example_config_and_minimal_config_satisfy_the_json_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = json.loads(settings_schema.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load(EXAMPLE.read_text()))
    validator.validate(minimal_config())
    bad = {**minimal_config(), "encryption": {"chunk_size": "big", "algorithm": "DES"}}
    messages = sorted(error.message for error in validator.iter_errors(bad))
    assert messages == [
        "'DES' is not one of ['AES-256-GCM', 'CHACHA20-POLY1305']",
        "'big' is not of type 'integer'",
    ]
    assert not validator.is_valid({**minimal_config(), "typo": 1})
    assert not validator.is_valid({k: v for k, v in minimal_config().items() if k != "backend"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"listen": {"port": "eighty"}}, "listen.port: 'eighty' is invalid; expected an integer"),
        ({"listen": {"port": 70000}}, "listen.port: 70000 is invalid (outside 0 .. 65535)"),
        ({"listen": {"port": True}}, "listen.port: true is invalid; expected an integer"),
        (
            {"encryption": {"allow_plaintext_reads": "maybe"}},
            "encryption.allow_plaintext_reads: 'maybe' is invalid; expected a boolean",
        ),
        (
            {"observability": {"access_log_format": "xml"}},
            "observability.access_log_format: 'xml' is invalid (not allowed); expected one of "
            "'json', 'common', 'combined', 's3'",
        ),
        (
            {"observability": {"metrics_buckets": {"a": 1}}},
            'observability.metrics_buckets: {"a": 1} is invalid; expected a list of names',
        ),
        ({"observability": "on"}, "observability: 'on' is invalid; expected a mapping"),
        ({"encryption": {"chunk_sise": 1024}}, "encryption.chunk_sise: unknown setting"),
        ({"tracing": {}}, "tracing: unknown setting"),
        ({"backend": {"access_key_id": ["x"]}}, "backend.access_key_id: <secret> is invalid"),
        (
            {"credentials": [{"access_key_id": "AK"}]},
            "credentials[0].secret_access_key is required",
        ),
        ({"keyring": {"keys": {"k1": {"base64": "x", "colour": "red"}}}}, "unknown key 'colour'"),
    ],
)
def test_invalid_values_name_key_value_and_expected_type(
    change: dict[str, Any], message: str
) -> None:
    tree = minimal_config()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree.get(key, {}), **value}
        else:
            tree[key] = value
    with pytest.raises(SettingsError) as raised:
        parse_settings(tree)
    assert message in str(raised.value)


def test_environment_strings_are_coerced_and_unrelated_variables_ignored(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(minimal_config()))
    loaded = load_config(
        str(config),
        environ={
            "S3GW_LISTEN__PORT": "9001",
            "S3GW_ENCRYPTION__ALLOW_PLAINTEXT_READS": "off",
            "S3GW_WORKERS": "4",  # a command-line default, not a setting
        },
    )
    assert loaded.settings.listen_port == 9001
    assert loaded.settings.allow_plaintext_reads is False
    with pytest.raises(SettingsError, match=r"listen\.port: 'x' is invalid"):
        load_config(str(config), environ={"S3GW_LISTEN__PORT": "x"})


def _change(**sections: dict[str, Any]) -> dict[str, Any]:
    tree = minimal_config()
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value}
    return normalize(tree)


def test_reload_rules_allow_safe_changes_and_refuse_crypto_and_backend_changes() -> None:
    old = normalize(minimal_config())
    k2 = {"base64": base64.b64encode(b"2" * 32).decode()}
    rotated = _change(
        keyring={"active": "k2", "keys": {**minimal_config()["keyring"]["keys"], "k2": k2}}
    )
    found = changes(old, rotated)
    assert [(c.text, c.allowed) for c in found] == [
        ("keyring.active: 'k1' -> 'k2'", True),
        ("keyring.keys: added k2", True),
    ]
    removed = changes(rotated, old)
    assert [c.allowed for c in removed] == [True, False]
    assert "removing k2 is refused" in removed[1].text
    chunk = changes(old, _change(encryption={"chunk_size": 1 << 20}))
    assert [(c.text, c.allowed) for c in chunk] == [
        ("encryption.chunk_size: 65536 -> 1048576 needs a restart", False)
    ]
    secret = changes(old, _change(backend={"secret_access_key": "new-secret"}))
    assert [(c.text, c.allowed) for c in secret] == [
        ("backend.secret_access_key: changed needs a restart", False)
    ]
    tree = minimal_config()
    tree["credentials"] = [
        {"access_key_id": "AK", "secret_access_key": "rotated"},
        {"access_key_id": "AK2", "secret_access_key": "SK2"},
    ]
    creds = changes(old, normalize(tree))
    assert [(c.text, c.allowed) for c in creds] == [
        ("credentials: added AK2; secret changed for AK", True)
    ]
    assert "rotated" not in creds[0].text and "SK2" not in creds[0].text

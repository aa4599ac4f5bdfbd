"""The Helm chart, linted and rendered by the Helm engine (Helm's Go SDK, from PyPI).

Every rendering (defaults and each file in the chart's ``examples/``) must pass
``helm lint --strict``, validate against the Kubernetes schemas, and produce a
gateway configuration the gateway itself accepts. ``values.schema.json``
must reject wrong types and unknown enum values.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from addons.settings import load_config

helm_python = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (the Helm engine) is not installed"
)
helm = pytest.importorskip(
    "helm_python.chart", reason="helm-python-sdk (the Helm engine) is not installed"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed"
)

CHART = Path(__file__).resolve().parents[1] / "helm" / "s3-encryption-gateway"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
KUBERNETES_VERSION = "1.30.0"
RELEASE = "s3gw"

# Prometheus Operator kinds are not in the Kubernetes schemas: check their shape.
MONITOR_ENDPOINTS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}


def _values(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path else {}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True)
    documents = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents}


CASES = [pytest.param(None, id="defaults")] + [pytest.param(p, id=p.stem) for p in EXAMPLES]


def test_there_are_examples() -> None:
    assert {p.stem for p in EXAMPLES} >= {"production", "secrets-from-env"}


@pytest.mark.parametrize("values_file", CASES)
def test_chart_lints_strictly(values_file: Path | None) -> None:
    report = helm.lint(CHART, _values(values_file), strict=True, namespace=RELEASE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values_file", CASES)
def test_every_rendered_object_validates(values_file: Path | None) -> None:
    documents = _render(_values(values_file))
    kinds = [doc["kind"] for doc in documents]
    assert {"ConfigMap", "Deployment", "Service"} <= set(kinds)
    for doc in documents:
        if doc["kind"] in MONITOR_ENDPOINTS:
            endpoints = doc["spec"][MONITOR_ENDPOINTS[doc["kind"]]]
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"]["selector"]["matchLabels"]
            assert [e["port"] for e in endpoints] == ["metrics"]
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _fake_secret(name: str) -> str:
    if name == "S3GW_CREDENTIALS":
        return "APPKEY:app-secret"
    if "kek" in name.lower() or "__KEYS__" in name:
        return base64.b64encode(b"k" * 32).decode()
    return "a-secret"


@pytest.mark.parametrize("values_file", CASES)
def test_rendered_configuration_is_accepted_by_the_gateway(
    values_file: Path | None, tmp_path: Path
) -> None:
    """The ConfigMap, the Secret files and the environment make a valid configuration."""
    objects = _by_kind(_render(_values(values_file)))
    text = objects["ConfigMap"]["data"]["gateway.yaml"]
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_file = container["args"][container["args"].index("--config") + 1]
    assert Path(config_file).parent == Path(mounted["config"])  # a directory: reloads see edits
    # Secret files (from the chart's Secret or an existing one) land in a temporary directory.
    secret_dir = "/etc/s3gw/secrets/"
    for name in {
        line.split(secret_dir, 1)[1].split()[0] for line in text.splitlines() if secret_dir in line
    }:
        (tmp_path / name).write_text(_fake_secret(name))
        (tmp_path / name).chmod(0o440)  # the chart's defaultMode; 0644 would be refused
    config = tmp_path / "gateway.yaml"
    config.write_text(text.replace(secret_dir, f"{tmp_path}/"))
    environ = {e["name"]: e.get("value") or _fake_secret(e["name"]) for e in container["env"]}
    loaded = load_config(str(config), environ)
    assert loaded.settings.listen_port == container["ports"][0]["containerPort"]
    metrics = [p for p in container["ports"] if p["name"] == "metrics"]
    assert [p["containerPort"] for p in metrics] == (
        [loaded.settings.observability.metrics_port] if metrics else []
    )


def test_defaults_are_non_root_read_only_with_probes() -> None:
    objects = _by_kind(_render({}))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "Ingress" not in objects and "NetworkPolicy" not in objects


def test_examples_use_the_extension_points() -> None:
    objects = _by_kind(_render(_values(CHART / "examples" / "secrets-from-env.yaml")))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway", "log-shipper"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-backend"]
    assert "backend-ca" in {v["name"] for v in pod["volumes"]}
    assert "S3GW_CREDENTIALS" in {e["name"] for e in pod["containers"][0]["env"]}
    production = _by_kind(_render(_values(CHART / "examples" / "production.yaml")))
    assert production["Ingress"]["spec"]["rules"][0]["host"] == "s3.example.com"
    annotations = production["Deployment"]["spec"]["template"]["metadata"].get("annotations", {})
    assert "checksum/config" not in annotations  # rollOnConfigChange: false


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"service": {"type": "Internal"}}, "/service/type"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"ingress": {"hosts": [{"host": "x", "paths": [{"path": "no-slash"}]}]}}, "path"),
        ({"topologySpread": {"whenUnsatisfiable": "Never"}}, "whenUnsatisfiable"),
        ({"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
        ({"extraEnv": {"A": "b"}}, "/extraEnv"),
        ({"replicas": 3}, "replicas"),  # a typo of replicaCount
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        _render(values)
    assert message in str(raised.value)


def test_inline_secrets_are_refused() -> None:
    values = {"config": {"backend": {"url": "https://s3.example.com", "secret_access_key": "x"}}}
    with pytest.raises(helm_python.HelmRenderError, match="must not be inline"):
        _render(values)

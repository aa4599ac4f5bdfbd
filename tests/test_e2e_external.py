"""External (cloud) backends of the e2e matrix, proven against a local server.

There is no cloud account here, so the path a cloud account takes is run
against moto instead: ``S3GW_E2E_*`` variables describe an external backend
whose endpoint is the session's moto server and whose bucket already exists,
and a separate pytest run of ``tests/test_e2e_matrix.py`` selects it. That run
reads the variables as a run against AWS would; afterwards the bucket must hold
exactly what it held before. The parsing of the variables is checked on its own
below.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    E2E_EXTERNAL_ENV,
    E2E_PREFIX_ROOT,
    KNOWN_EXTERNAL_BACKENDS,
    REPO_ROOT,
    Backend,
    BucketArea,
    ExternalBackendNotConfigured,
    child_env,
    default_gateway_config,
    delete_bucket_area,
    external_backend,
    external_backend_names,
    make_bucket,
    requested_external_backends,
)

AWS = {
    "S3GW_E2E_AWS_REGION": "eu-central-1",
    "S3GW_E2E_AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE01",
    "S3GW_E2E_AWS_SECRET_ACCESS_KEY": "secretsecretsecretsecretsecretsecret0001",
    "S3GW_E2E_AWS_BUCKET": "existing-bucket",
}


def test_known_cloud_backends_are_always_listed_and_more_can_be_asked_for() -> None:
    assert external_backend_names({}) == KNOWN_EXTERNAL_BACKENDS == ("aws", "wasabi", "hetzner")
    environ = {E2E_EXTERNAL_ENV: " Hetzner, minio-lab,,hetzner "}
    assert requested_external_backends(environ) == ("hetzner", "minio-lab")
    assert external_backend_names(environ) == ("aws", "wasabi", "hetzner", "minio-lab")
    for bad in ("minio lab", "minio_lab", "-x"):
        with pytest.raises(ValueError, match=E2E_EXTERNAL_ENV):
            requested_external_backends({E2E_EXTERNAL_ENV: bad})


def test_an_unconfigured_backend_names_the_missing_variables() -> None:
    with pytest.raises(ExternalBackendNotConfigured) as aws:
        external_backend("aws", {})
    assert aws.value.missing == list(AWS)  # no endpoint needed: derived from the region
    with pytest.raises(ExternalBackendNotConfigured) as wasabi:
        external_backend("wasabi", {"S3GW_E2E_WASABI_BUCKET": "b", "S3GW_E2E_AWS_REGION": "x"})
    assert wasabi.value.missing == [
        "S3GW_E2E_WASABI_ENDPOINT",
        "S3GW_E2E_WASABI_REGION",
        "S3GW_E2E_WASABI_ACCESS_KEY_ID",
        "S3GW_E2E_WASABI_SECRET_ACCESS_KEY",
    ]
    assert "S3GW_E2E_WASABI_ENDPOINT" in str(wasabi.value)


def test_aws_defaults_and_a_backend_of_another_name() -> None:
    aws = external_backend("aws", AWS)
    assert aws.endpoint_url == "https://s3.eu-central-1.amazonaws.com"
    assert aws.region == "eu-central-1"
    assert (aws.provider, aws.addressing, aws.shared_bucket) == ("aws", "path", "existing-bucket")
    assert aws.process is None
    assert aws.credentials.access_key_id == AWS["S3GW_E2E_AWS_ACCESS_KEY_ID"]
    config = default_gateway_config(aws)
    assert config["provider"] == "aws"
    assert config["backend"]["url"] == aws.endpoint_url
    assert config["backend"]["region"] == "eu-central-1"

    lab = external_backend(
        "minio-lab",
        {
            "S3GW_E2E_MINIO_LAB_ENDPOINT": "https://minio.example.net:9000/",
            "S3GW_E2E_MINIO_LAB_REGION": "lab",
            "S3GW_E2E_MINIO_LAB_ACCESS_KEY_ID": "k",
            "S3GW_E2E_MINIO_LAB_SECRET_ACCESS_KEY": "s",
            "S3GW_E2E_MINIO_LAB_BUCKET": "b",
            "S3GW_E2E_MINIO_LAB_ADDRESSING": "Virtual",
        },
    )
    assert (lab.endpoint_url, lab.provider) == ("https://minio.example.net:9000", "generic")
    assert lab.addressing == "virtual"
    assert lab.client().meta.config.s3["addressing_style"] == "virtual"
    # A name that is a provider profile gets that profile unless PROVIDER says otherwise.
    for name in ("hetzner", "minio"):
        environ = {**_renamed(AWS, name.upper()), f"S3GW_E2E_{name.upper()}_ENDPOINT": "http://h"}
        assert external_backend(name, environ).provider == name
        environ[f"S3GW_E2E_{name.upper()}_PROVIDER"] = "CEPH"
        assert external_backend(name, environ).provider == "ceph"


def _renamed(environ: dict[str, str], name: str) -> dict[str, str]:
    return {key.replace("_AWS_", f"_{name}_"): value for key, value in environ.items()}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ENDPOINT", "s3.example.com"),
        ("ENDPOINT", "https://s3.example.com/some/path"),
        ("PROVIDER", "nope"),
        ("ADDRESSING", "dns"),
    ],
)
def test_invalid_settings_are_refused(setting: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"S3GW_E2E_AWS_{setting}"):
        external_backend("aws", {**AWS, f"S3GW_E2E_AWS_{setting}": value})


def test_cloud_credentials_stay_out_of_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3GW_E2E_AWS_SECRET_ACCESS_KEY", "do-not-pass-on")
    assert not [name for name in child_env() if name.startswith("S3GW_E2E_")]


def test_no_buckets_are_made_and_nothing_outside_a_test_prefix_is_deleted() -> None:
    aws = external_backend("aws", AWS)
    with pytest.raises(RuntimeError, match="must not create buckets"):
        make_bucket(aws)
    for prefix in ("data/", "s3gw-e2e", "other/s3gw-e2e/x/"):
        with pytest.raises(ValueError, match="refusing"):
            delete_bucket_area(BucketArea(aws, "existing-bucket", prefix))


def test_matrix_runs_against_an_external_backend(moto_backend: Backend, tmp_path: Path) -> None:
    """The e2e matrix against moto posing as a cloud account named ``fake-cloud``: only
    under its own prefixes, deleting all it wrote, creating no bucket. ``aws`` is
    selected too and must skip, naming its variables."""
    direct = moto_backend.client()
    bucket = make_bucket(moto_backend, "shared")
    # Objects of someone else, one of them under the root of the test prefixes.
    sentinels = {"sentinel.txt": b"not the tests'", f"{E2E_PREFIX_ROOT}older-run/keep": b"keep"}
    for key, body in sentinels.items():
        direct.put_object(Bucket=bucket, Key=key, Body=body)
    buckets_before = direct.list_buckets()["Buckets"]
    log_mark = moto_backend.process.log_mark() if moto_backend.process else 0

    environ = child_env(
        S3GW_E2E_EXTERNAL="fake-cloud",
        S3GW_E2E_FAKE_CLOUD_ENDPOINT=moto_backend.endpoint_url,
        S3GW_E2E_FAKE_CLOUD_REGION="eu-central-1",
        S3GW_E2E_FAKE_CLOUD_ACCESS_KEY_ID=moto_backend.access_key_id,
        S3GW_E2E_FAKE_CLOUD_SECRET_ACCESS_KEY=moto_backend.secret_access_key,
        S3GW_E2E_FAKE_CLOUD_BUCKET=bucket,
        S3GW_E2E_FAKE_CLOUD_PROVIDER="wasabi",
    )
    inner = tmp_path / "inner"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_e2e_matrix.py",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={inner}",
            "-k",
            "fake-cloud or aws",
        ],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = f"inner pytest run exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, report
    summary = run.stdout.strip().splitlines()[-1]
    assert re.match(r"10 passed, 10 skipped, \d+ deselected in ", summary), report
    assert re.search(r"SKIPPED \[2\] .*no aws account: set S3GW_E2E_AWS_REGION", run.stdout)

    # The gateways of that run forwarded to moto, with the region and profile given.
    configs = [yaml.safe_load(path.read_text()) for path in inner.rglob("gateway.yaml")]
    assert len(configs) == 2, report  # encryption on and off
    for config in configs:
        assert config["backend"]["url"] == moto_backend.endpoint_url
        assert config["backend"]["region"] == "eu-central-1"
        assert config["provider"] == "wasabi"
    # The tests wrote under their prefixes of the shared bucket and deleted it all again.
    assert moto_backend.process is not None
    requests = moto_backend.process.output(log_mark)
    written = set(re.findall(rf'"PUT /{bucket}/{E2E_PREFIX_ROOT}([^/]+)/', requests))
    assert len(written) >= 10, requests  # one prefix per test at least
    assert f'"POST /{bucket}?delete' in requests
    left = direct.list_objects_v2(Bucket=bucket)["Contents"]
    assert {item["Key"] for item in left} == set(sentinels)
    assert not direct.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert direct.list_buckets()["Buckets"] == buckets_before

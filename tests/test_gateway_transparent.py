"""Transparent mode: an app keeps its S3 endpoint and proxy settings, its traffic
is redirected to the gateway by an nftables rule.

This needs root (a network namespace of its own and a NAT rule in it: nothing
outside the namespace changes), ``unshare``, ``setpriv``, ``nft`` and the
kernel's nftables NAT; where any is missing the test is skipped and says why.
The scenario itself is in tests/transparent_netns.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, child_env


def _missing() -> str | None:
    """Why transparent mode cannot be exercised here, or None."""
    if sys.platform != "linux":
        return "the recipe tested (nftables, network namespaces) is Linux's"
    if os.geteuid() != 0:
        return "needs root for a network namespace and an nftables NAT rule"
    for tool in ("unshare", "setpriv", "nft", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(
        ["unshare", "--net", "nft", "add table ip s3gw_probe"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"no nftables in a new network namespace: {probe.stderr.strip()}"
    return None


MISSING = _missing()


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
def test_redirected_traffic_is_encrypted(tmp_path: Path) -> None:
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.transparent_netns", str(tmp_path)],
        cwd=REPO_ROOT,
        env=child_env(PYTHONPATH=python_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "transparent mode: OK" in run.stdout

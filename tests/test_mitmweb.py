"""The gateway's addons under mitmweb: each S3 flow's comment carries its facts,
as mitmweb's ``/flows`` API shows them, and the decrypting content view shows a
stored object's plaintext."""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mitmproxy.tools.web import webaddons

from addons.decryptview import VIEW_NAME
from tests.harness import (
    CHUNK_SIZE,
    GATEWAY_SCRIPT,
    GATEWAY_USER,
    KEYRING_ACTIVE_KEY_ID,
    REPO_ROOT,
    Backend,
    ManagedProcess,
    StartupError,
    child_env,
    default_gateway_config,
    find_executable,
    free_port,
    http_status,
    make_bucket,
    s3_client,
    wait_until,
)

# mitmweb protects its API with a token since mitmproxy 11.1 (the web_password option).
WEB_AUTH = hasattr(webaddons, "WebAuth")
MIB = 1024 * 1024


class MitmWeb:
    def __init__(self, backend: Backend, work_dir: Path, script: Path = GATEWAY_SCRIPT) -> None:
        config_path = work_dir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(default_gateway_config(backend)))
        self.port = free_port()
        self.web_port = free_port()
        self.token = secrets.token_hex(16)
        argv = [
            find_executable("mitmweb"),
            "-s",
            str(script),
            "--mode",
            f"reverse:{backend.endpoint_url}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(self.web_port),
            "--no-web-open-browser",
            "--set",
            f"confdir={work_dir / 'mitmproxy'}",
            "--set",
            f"gw_config={config_path}",
        ]
        if WEB_AUTH:
            argv += ["--set", f"web_password={self.token}"]
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.process = ManagedProcess(
            "mitmweb",
            argv,
            work_dir / "mitmweb.log",
            env=child_env(PYTHONPATH=python_path),
            cwd=REPO_ROOT,
        )
        # The gateway answers /readyz itself; without it, the backend answers anything.
        ready = 200 if script == GATEWAY_SCRIPT else 0
        try:
            wait_until(
                lambda: self.process.check_alive() or http_status(f"{self.url}/readyz") >= ready,
                30,
                what="mitmweb /readyz",
            )
        except (StartupError, TimeoutError) as error:
            self.process.stop()
            raise StartupError(f"{error}\n{self.process.describe()}") from error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}")
        if WEB_AUTH:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def flows(self) -> list[dict[str, Any]]:
        flows: list[dict[str, Any]] = self.api("/flows")
        return flows

    def content_view(self, flow_id: str, message: str, view: str) -> str:
        """A message as mitmweb's content view API renders it (mitmproxy 12 or 11)."""
        quoted = urllib.parse.quote(view, safe="")
        shown = self.api(f"/flows/{flow_id}/{message}/content/{quoted}.json")
        if "text" in shown:
            return str(shown["text"])
        return "\n".join("".join(text for _, text in line) for line in shown["lines"])


@pytest.fixture(scope="module")
def mitmweb(moto_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitmWeb]:
    web = MitmWeb(moto_backend, tmp_path_factory.mktemp("mitmweb"))
    try:
        yield web
    finally:
        web.process.stop()


def _flow(web: MitmWeb, method: str, path: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for flow in web.flows():
            request = flow.get("request") or {}
            path_matches = str(request.get("path", "")).startswith(path)
            if request.get("method") == method and path_matches and flow.get("comment"):
                return flow
        return None

    found = wait_until(find, 10, what=f"a commented {method} {path} flow in /flows")
    assert found is not None
    return found


def _comment(web: MitmWeb, method: str, path: str) -> str:
    return str(_flow(web, method, path)["comment"])


def test_flows_api_shows_the_s3_facts(moto_backend: Backend, mitmweb: MitmWeb) -> None:
    bucket = make_bucket(moto_backend, prefix="web")
    s3 = s3_client(mitmweb.url, GATEWAY_USER, region=moto_backend.region)
    small = b"small body" * 100
    large = os.urandom(2 * MIB + 5)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    s3.put_object(Bucket=bucket, Key="large", Body=large)
    assert s3.get_object(Bucket=bucket, Key="large")["Body"].read() == large

    put_small = _comment(mitmweb, "PUT", f"/{bucket}/small")
    assert f"S3 PutObject  bucket={bucket}  key=small" in put_small
    assert f"key id: {KEYRING_ACTIVE_KEY_ID}" in put_small
    assert "algorithm: AES-256-GCM" in put_small
    assert f"chunk size: {CHUNK_SIZE}" in put_small
    assert "frames: 1" in put_small
    assert f"encrypt: plaintext {len(small)} B" in put_small

    get_large = _comment(mitmweb, "GET", f"/{bucket}/large")
    assert f"S3 GetObject  bucket={bucket}  key=large" in get_large
    assert "encryption: s3g1" in get_large
    assert f"key id: {KEYRING_ACTIVE_KEY_ID}" in get_large
    chunks = -(-len(large) // CHUNK_SIZE)
    assert f"decrypt: plaintext {len(large)} B" in get_large
    assert f"{chunks} chunks" in get_large
    assert "response body streamed through, not kept" in get_large

    put_large = _comment(mitmweb, "PUT", f"/{bucket}/large")
    assert "request body streamed through, not kept" in put_large


def test_decrypted_content_view_shows_a_put_in_plaintext(
    moto_backend: Backend, mitmweb: MitmWeb
) -> None:
    """The request mitmweb keeps of a small PUT is the ciphertext sent to the backend."""
    bucket = make_bucket(moto_backend, prefix="webview")
    s3 = s3_client(mitmweb.url, GATEWAY_USER, region=moto_backend.region)
    body = "decrypted in mitmweb\n" * 10
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=body.encode())
    flow = _flow(mitmweb, "PUT", f"/{bucket}/doc.txt")

    raw = mitmweb.content_view(flow["id"], "request", "raw")
    assert "decrypted in mitmweb" not in raw
    shown = mitmweb.content_view(flow["id"], "request", VIEW_NAME)
    facts, plaintext = shown.split("\n\n", 1)
    assert f"S3G1 key id: {KEYRING_ACTIVE_KEY_ID}  algorithm: AES-256-GCM" in facts
    assert f"frames: 1  chunks: 1  plaintext: {len(body)} B" in facts
    assert plaintext == body

    # A body over 1 MiB streams through the gateway and is not kept: mitmproxy has
    # no content to give the view ("Content is missing.", 11: "content missing").
    s3.put_object(Bucket=bucket, Key="large", Body=os.urandom(2 * MIB))
    large = _flow(mitmweb, "PUT", f"/{bucket}/large")
    assert "request body streamed through, not kept" in large["comment"]
    shown = mitmweb.content_view(large["id"], "request", VIEW_NAME)
    assert "missing" in shown.lower() and "S3G1" not in shown


def test_decrypted_content_view_in_front_of_the_storage(
    moto_backend: Backend, mitmweb: MitmWeb, tmp_path: Path
) -> None:
    """The view alone in a plain mitmweb between a client and the storage: GET answers."""
    bucket = make_bucket(moto_backend, prefix="webview")
    body = bytes(range(256)) * 300  # binary, several chunks
    s3_client(mitmweb.url, GATEWAY_USER, region=moto_backend.region).put_object(
        Bucket=bucket, Key="blob", Body=body
    )
    plain = MitmWeb(moto_backend, tmp_path, REPO_ROOT / "addons" / "decryptview.py")
    try:
        direct = s3_client(plain.url, moto_backend.credentials, region=moto_backend.region)
        assert direct.get_object(Bucket=bucket, Key="blob")["Body"].read() != body
        flow = wait_until(
            lambda: next(
                (f for f in plain.flows() if f["request"]["path"] == f"/{bucket}/blob"), None
            ),
            10,
            what="the GET flow",
        )
        shown = plain.content_view(flow["id"], "response", VIEW_NAME)
    finally:
        plain.process.stop()
    chunks = -(-len(body) // CHUNK_SIZE)
    assert f"frames: 1  chunks: {chunks}  plaintext: {len(body)} B" in shown
    assert "0000000000 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f" in shown

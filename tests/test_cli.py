"""The installed command line: ``run`` with a config file, and the README's ``demo``."""

from __future__ import annotations

import http.client
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.config import Config

from addons.cli import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
from tests.harness import (
    Backend,
    Credentials,
    ManagedProcess,
    child_env,
    child_pids,
    default_gateway_config,
    find_executable,
    free_port,
    http_status,
    make_bucket,
    s3_client,
    tcp_sockets,
    wait_until,
)


def _start(
    name: str, argv: list[str], tmp_path: Path, port: int, cwd: Path | None = None, **env: str
) -> ManagedProcess:
    process = ManagedProcess(name, argv, tmp_path / f"{name}.log", env=child_env(**env), cwd=cwd)
    wait_until(
        lambda: process.check_alive() or http_status(f"http://127.0.0.1:{port}/readyz") == 200,
        30,
        what=f"{name} /readyz",
    )
    return process


def python_flags(pid: int) -> list[str]:
    """The interpreter options of process ``pid`` (what comes before ``-m``)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[1 : argv.index("-m")] if "-m" in argv else argv[1:2]


def decoy_addons(directory: Path) -> Path:
    """A working directory holding another ``addons`` package, as mitmproxy users have."""
    package = directory / "decoy" / "addons"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('the wrong addons package')\n")
    return package.parent


@dataclass(frozen=True)
class RunConfig:
    """A gateway config file for `s3-encryption-gateway run`, on a free fixed port."""

    config: dict[str, Any]
    path: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, *extra: str) -> list[str]:
        return [find_executable("s3-encryption-gateway"), "run", "--config", str(self.path), *extra]

    def client(self, **kwargs: Any) -> Any:
        user = self.config["credentials"][0]
        credentials = Credentials(user["access_key_id"], user["secret_access_key"])
        return s3_client(self.url, credentials, **kwargs)


def run_config(backend: Backend, tmp_path: Path) -> RunConfig:
    port = free_port()
    config = default_gateway_config(backend)
    config["listen"] = {"host": "127.0.0.1", "port": port}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return RunConfig(config, path, port)


def test_run_serves_from_a_config_file(moto_backend: Backend, tmp_path: Path) -> None:
    run = run_config(moto_backend, tmp_path)
    # `run` drops mitmproxy's flow saving (gw_lean): asked to, it still writes no flows.
    flows = tmp_path / "flows.mitm"
    argv = run.argv("--set", f"confdir={tmp_path}", "--set", f"save_stream_file={flows}")
    # Started where another `addons` package lies: run re-executes itself with this one.
    process = _start("cli-run", argv, tmp_path, run.port, cwd=decoy_addons(tmp_path))
    try:
        # The same process, now under -O: mitmproxy's debug-only checks are off (ADR 0011).
        assert python_flags(process.pid) == ["-O", "-P"]
        s3 = run.client()
        bucket = make_bucket(moto_backend, prefix="cli")
        s3.put_object(Bucket=bucket, Key="k", Body=b"via the CLI")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"via the CLI"
        assert (
            b"via the CLI"
            not in moto_backend.client().get_object(Bucket=bucket, Key="k")["Body"].read()
        )
    finally:
        process.stop()
    assert not flows.exists() or flows.stat().st_size == 0


def test_run_lets_the_caller_override_its_own_options(
    moto_backend: Backend, tmp_path: Path
) -> None:
    """`run` sets gw_lean itself; given again, mitmproxy would not load the gateway's script
    at all (a gw_* option with two values) and proxy unencrypted. The caller's value wins,
    as PYTHONOPTIMIZE=0 does over `run`'s -O."""
    run = run_config(moto_backend, tmp_path)
    argv = run.argv("--set", f"confdir={tmp_path}", "--set", "gw_lean=false")
    process = _start("cli-override", argv, tmp_path, run.port, PYTHONOPTIMIZE="0")
    try:
        assert "-O" not in python_flags(process.pid)
        s3 = run.client()
        bucket = make_bucket(moto_backend, prefix="cli")
        s3.put_object(Bucket=bucket, Key="k", Body=b"kept secret")
        stored = moto_backend.client().get_object(Bucket=bucket, Key="k")
        assert "s3gw" in stored["Metadata"] and stored["Body"].read() != b"kept secret"
    finally:
        process.stop()


def test_run_with_two_workers_serves_from_both(moto_backend: Backend, tmp_path: Path) -> None:
    run = run_config(moto_backend, tmp_path)
    port = run.port
    argv = run.argv("--workers", "2", "--set", f"confdir={tmp_path}")
    process = _start("cli-workers", argv, tmp_path, port, cwd=decoy_addons(tmp_path))
    try:
        # Both workers hold a listening socket on the one port.
        def listening_workers() -> list[int]:
            workers = child_pids(process.pid)
            ready = [w for w in workers if any(s.listening and s.local_port == port
                                               for s in tcp_sockets(w))]  # fmt: skip
            return workers if len(workers) == 2 and len(ready) == 2 else []

        workers = wait_until(listening_workers, 30, what="two workers listening")
        assert all(python_flags(worker) == ["-O", "-P"] for worker in workers)
        # Presigned URLs default to SigV2.
        s3 = run.client(config=Config(signature_version="s3v4"))
        bucket = make_bucket(moto_backend, prefix="workers")
        put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"})
        put_path = put_url[len(f"http://127.0.0.1:{port}") :]
        # The kernel spreads new connections over the workers: see which worker
        # accepted each one, and that the PUT sent through it is answered.
        served_by: dict[int, int] = {}
        for attempt in range(64):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.connect()
                assert connection.sock is not None
                client_port = connection.sock.getsockname()[1]

                def accepted_by(client_port: int = client_port) -> int | None:
                    for worker in workers:
                        if any(s.established and s.remote_port == client_port
                               for s in tcp_sockets(worker)):  # fmt: skip
                            return worker
                    return None

                worker = wait_until(accepted_by, 10, what="a worker accepting")
                body = f"request {attempt}".encode()
                connection.request("PUT", put_path, body=body)
                response = connection.getresponse()
                assert response.status == 200, response.read()
                response.read()
            finally:
                connection.close()
            served_by[worker] = served_by.get(worker, 0) + 1
            if len(served_by) == 2:
                break
        assert sorted(served_by) == sorted(workers), served_by
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        stored = moto_backend.client().get_object(Bucket=bucket, Key="k")["Body"].read()
        assert stored.startswith(b"S3G1")  # encrypted by whichever worker
        # SIGTERM to the supervisor stops every worker.
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(15) is not None
        assert not any(Path(f"/proc/{worker}").exists() for worker in workers)
    finally:
        process.stop()


def test_run_rejects_an_invalid_config(tmp_path: Path) -> None:
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text("backend: {url: ftp://nowhere}\n")
    process = ManagedProcess(
        "cli-bad",
        [find_executable("s3-encryption-gateway"), "run", "--config", str(config_path)],
        tmp_path / "bad.log",
        env=child_env(),
    )
    assert process.process.wait(30) == 2
    assert "backend.url" in process.output() or "backend." in process.output()


def test_demo_starts_a_backend_and_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    argv = [find_executable("s3-encryption-gateway"), "demo", "--port", str(port)]
    process = _start("cli-demo", argv, tmp_path, port)
    children = child_pids(process.pid)  # the backend and the gateway
    try:
        assert len(children) == 2
        output = process.output()
        assert DEMO_ACCESS_KEY in output
        s3 = s3_client(f"http://127.0.0.1:{port}", Credentials(DEMO_ACCESS_KEY, DEMO_SECRET_KEY))
        s3.create_bucket(Bucket="demo")
        s3.put_object(Bucket="demo", Key="hello.txt", Body=b"hello, encrypted world")
        assert s3.get_object(Bucket="demo", Key="hello.txt")["Body"].read() == (
            b"hello, encrypted world"
        )
    finally:
        os.kill(process.pid, signal.SIGINT)
        assert process.process.wait(15) is not None
        process.stop()
    # Ctrl-C stops the whole demo: nothing is left running.
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]

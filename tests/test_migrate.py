"""``encrypt-existing`` and ``verify``: the real command against a real backend and gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import yaml

from tests.harness import (
    Backend,
    Gateway,
    GatewayFactory,
    ManagedProcess,
    child_env,
    default_gateway_config,
    find_executable,
    make_bucket,
    wait_until,
)

ENVELOPE = "s3gw"


def _config(backend: Backend, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(default_gateway_config(backend)))
    return path


def _command(name: str, config: Path, bucket: str, *extra: str) -> list[str]:
    executable = find_executable("s3-encryption-gateway")
    return [executable, name, "--config", str(config), "--bucket", bucket, *extra]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env=child_env(), timeout=120, check=False
    )


def _plaintext_bucket(backend: Backend, count: int) -> tuple[str, dict[str, bytes]]:
    bucket = make_bucket(backend, prefix="migrate")
    client = backend.client()
    objects = {f"obj-{i:03d}": os.urandom(i * 7919 % 300_000) for i in range(count)}
    objects["empty"] = b""
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"origin": key})
    return bucket, objects


def _assert_migrated(
    backend: Backend, gateway: Gateway, bucket: str, objects: dict[str, bytes]
) -> None:
    raw = backend.client()
    via_gateway = gateway.client()
    for key, body in objects.items():
        stored = raw.get_object(Bucket=bucket, Key=key)
        assert ENVELOPE in stored["Metadata"], key
        assert stored["Metadata"]["origin"] == key
        ciphertext = stored["Body"].read()
        assert len(ciphertext) > len(body)
        if len(body) > 64:
            assert body[:64] not in ciphertext
        answer = via_gateway.get_object(Bucket=bucket, Key=key)
        assert answer["Body"].read() == body, key
        assert answer["Metadata"] == {"origin": key}


def test_encrypt_existing_then_verify(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(moto_backend, tmp_path)
    bucket, objects = _plaintext_bucket(moto_backend, 6)

    before = _run(_command("verify", config, bucket))
    assert before.returncode == 0, before.stderr
    assert f"0 OK, 0 failed, {len(objects)} not encrypted" in before.stdout

    done = _run(_command("encrypt-existing", config, bucket))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"done: {len(objects)} encrypted, 0 already encrypted" in done.stdout
    _assert_migrated(moto_backend, gateway_factory(moto_backend), bucket, objects)

    again = _run(_command("encrypt-existing", config, bucket))
    assert f"done: 0 encrypted, {len(objects)} already encrypted" in again.stdout

    after = _run(_command("verify", config, bucket))
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"{len(objects)} OK, 0 failed, 0 not encrypted" in after.stdout


def test_verify_fails_on_a_tampered_object(moto_backend: Backend, tmp_path: Path) -> None:
    config = _config(moto_backend, tmp_path)
    bucket, objects = _plaintext_bucket(moto_backend, 2)
    assert _run(_command("encrypt-existing", config, bucket)).returncode == 0
    raw = moto_backend.client()
    stored = raw.get_object(Bucket=bucket, Key="obj-001")
    ciphertext = bytearray(stored["Body"].read())
    ciphertext[-5] ^= 1
    raw.put_object(
        Bucket=bucket, Key="obj-001", Body=bytes(ciphertext), Metadata=stored["Metadata"]
    )

    result = _run(_command("verify", config, bucket))
    assert result.returncode == 1
    assert "failed      obj-001" in result.stdout
    assert f"{len(objects) - 1} OK, 1 failed" in result.stdout


def test_encrypt_existing_killed_midway_resumes(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(moto_backend, tmp_path)
    bucket, objects = _plaintext_bucket(moto_backend, 12)
    progress: list[str] = []
    enough = threading.Event()

    def on_line(line: str) -> None:
        if line.startswith("encrypted "):
            progress.append(line)
            if len(progress) >= 3:
                enough.set()

    argv = _command("encrypt-existing", config, bucket, "--pause", "0.3")
    process = ManagedProcess(
        "migrate", argv, tmp_path / "migrate.log", env=child_env(), on_line=on_line
    )
    try:
        wait_until(lambda: enough.is_set() or process.check_alive(), 60, what="3 objects migrated")
        os.kill(process.pid, signal.SIGKILL)
        process.process.wait(10)
    finally:
        process.stop()
    assert "done:" not in process.output()

    raw = moto_backend.client()
    states = {
        key: ENVELOPE in raw.head_object(Bucket=bucket, Key=key)["Metadata"] for key in objects
    }
    assert 3 <= sum(states.values()) < len(objects), states

    resumed = _run(_command("encrypt-existing", config, bucket))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    encrypted_now = len(objects) - sum(states.values())
    assert f"done: {encrypted_now} encrypted, {sum(states.values())} already encrypted" in (
        resumed.stdout
    )
    # Encrypted exactly once: every object decrypts to its original through the gateway.
    _assert_migrated(moto_backend, gateway_factory(moto_backend), bucket, objects)


def test_verify_reads_multipart_objects(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(moto_backend, tmp_path)
    bucket = make_bucket(moto_backend, prefix="migrate")
    client = gateway_factory(moto_backend).client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="mp")
    parts = []
    for number, size in ((1, 5 * 1024 * 1024), (2, 12345)):
        answer = client.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=os.urandom(size),
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    result = _run(_command("verify", config, bucket))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 OK, 0 failed, 0 not encrypted" in result.stdout

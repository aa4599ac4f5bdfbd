"""``encrypt-existing`` and ``verify``: the real command against a real backend and gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from addons.migrate import encrypt_existing
from addons.settings import load_settings
from tests.harness import (
    REPO_ROOT,
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


MIB = 1024 * 1024
# A small multipart threshold and part size, so a 12 MiB object is written in 3 parts.
MULTIPART = ("--multipart-threshold", "10MiB", "--part-size", "5MiB")


def test_large_objects_are_migrated_as_multipart_uploads(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(moto_backend, tmp_path)
    bucket = make_bucket(moto_backend, prefix="migrate")
    raw = moto_backend.client()
    objects = {"big": os.urandom(12 * MIB + 4321), "small": os.urandom(1000)}
    for key, body in objects.items():
        raw.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"origin": key})

    done = _run(_command("encrypt-existing", config, bucket, *MULTIPART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"encrypted big ({len(objects['big'])} bytes, multipart)" in done.stdout
    assert "done: 2 encrypted, 0 already encrypted" in done.stdout
    assert raw.head_object(Bucket=bucket, Key="big", PartNumber=1)["PartsCount"] == 3
    gateway = gateway_factory(moto_backend)
    _assert_migrated(moto_backend, gateway, bucket, objects)
    # Parts of one size: ranged reads across a part boundary work through the gateway.
    ranged = gateway.client().get_object(Bucket=bucket, Key="big", Range="bytes=5242000-5243000")
    assert ranged["Body"].read() == objects["big"][5242000:5243001]
    after = _run(_command("verify", config, bucket))
    assert "2 OK, 0 failed, 0 not encrypted" in after.stdout, after.stdout + after.stderr


# Runs encrypt-existing in a process that SIGKILLs itself at the worst moment: every
# part uploaded, the object checked, its multipart upload not completed yet.
_KILLED_BEFORE_COMPLETING = """
import os, signal, sys
from addons.migrate import encrypt_existing
from addons.settings import load_settings
encrypt_existing(
    load_settings(sys.argv[1]), sys.argv[2], multipart_threshold=10 * 2**20,
    part_size=5 * 2**20, before_write=lambda key: os.kill(os.getpid(), signal.SIGKILL),
)
"""


def test_a_multipart_migration_killed_before_completing_resumes(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(moto_backend, tmp_path)
    bucket = make_bucket(moto_backend, prefix="migrate")
    raw = moto_backend.client()
    body = os.urandom(12 * MIB + 1)
    raw.put_object(Bucket=bucket, Key="big", Body=body, Metadata={"origin": "big"})

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_COMPLETING, str(config), bucket],
        capture_output=True,
        env=child_env(PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Still the plaintext, untouched; the parts wait in an incomplete upload.
    stored = raw.get_object(Bucket=bucket, Key="big")
    assert ENVELOPE not in stored["Metadata"] and stored["Body"].read() == body
    assert [u["Key"] for u in raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [
        "big"
    ]

    resumed = _run(_command("encrypt-existing", config, bucket, *MULTIPART))
    assert "done: 1 encrypted, 0 already encrypted" in resumed.stdout, resumed.stdout
    _assert_migrated(moto_backend, gateway_factory(moto_backend), bucket, {"big": body})


def test_a_write_during_the_migration_is_never_overwritten(
    moto_backend: Backend, tmp_path: Path
) -> None:
    """A client writes after the migration's last check, before its PUT: the PUT is
    conditional on the ETag read (If-Match), so the backend refuses it."""
    bucket = make_bucket(moto_backend, prefix="migrate")
    raw = moto_backend.client()
    raw.put_object(Bucket=bucket, Key="k", Body=b"old plaintext")

    def concurrent_write(key: str) -> None:
        raw.put_object(Bucket=bucket, Key=key, Body=b"written meanwhile")

    lines: list[str] = []
    result = encrypt_existing(
        load_settings(str(_config(moto_backend, tmp_path))),
        bucket,
        before_write=concurrent_write,
        report=lines.append,
    )
    assert (result.encrypted, result.changed) == (0, 1), lines
    assert "changed   k: overwritten during the migration, left as it is" in lines
    assert raw.get_object(Bucket=bucket, Key="k")["Body"].read() == b"written meanwhile"

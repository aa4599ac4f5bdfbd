"""S3 clients other than boto3 and awscli, set up to talk to a gateway of the harness:
rclone (as a client), the MinIO Python SDK and s3fs/fsspec.

Each is isolated from the developer's own configuration: rclone gets a config
file of its own and no ``RCLONE_*`` variables; the SDKs get explicit endpoints,
credentials and region (the test session already points the AWS config files
at ``/dev/null``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import s3fs
from minio import Minio

from tests.harness import GATEWAY_USER, REGION, Gateway, child_env, find_executable

# rclone checks an upload (and a download to disk) by comparing the MD5 of the
# data with the object's ETag when the ETag looks like an MD5, i.e. for objects
# uploaded in one PUT. Behind the gateway that ETag is the MD5 of the ciphertext
# (docs/adr/0006-etags-are-the-backends.md), so such transfers need this flag.
# Multipart objects have "-n" ETags: rclone then compares with the plaintext MD5
# it stored itself in the object's metadata, and the check passes.
RCLONE_IGNORE_ETAG = "--ignore-checksum"
# Multipart uploads with 5 MiB parts from 5 MiB on (rclone's cutoff is 200 MiB).
RCLONE_MULTIPART = ("--s3-chunk-size", "5M", "--s3-upload-cutoff", "5M")


class Rclone:
    """The ``rclone`` of this environment with one S3 remote, ``gw:``, for the gateway.

    One attempt per command: a failure is reported, not retried.
    """

    def __init__(self, work_dir: Path, gateway: Gateway) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        config = work_dir / "rclone.conf"
        config.write_text(
            "[gw]\n"
            "type = s3\n"
            "provider = Other\n"
            f"endpoint = {gateway.url}\n"
            f"access_key_id = {GATEWAY_USER.access_key_id}\n"
            f"secret_access_key = {GATEWAY_USER.secret_access_key}\n"
            f"region = {REGION}\n"
            "force_path_style = true\n"
            "no_check_bucket = true\n"
        )
        self._argv = [
            find_executable("rclone"),
            "--config",
            str(config),
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ]
        self._env = {k: v for k, v in child_env().items() if not k.startswith("RCLONE_")}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        completed = subprocess.run(
            [*self._argv, *args], env=self._env, capture_output=True, timeout=120, check=False
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"rclone {' '.join(args)} exited {completed.returncode}\n"
                f"{completed.stderr.decode(errors='replace')}"
            )
        return completed

    def sizes(self, remote: str) -> dict[str, int]:
        """``rclone lsl``: path -> size (lsl reads each object's metadata for its mtime)."""
        listing = self("lsl", remote).stdout.decode()
        lines = [re.match(r"\s*(\d+) \S+ \S+ (.+)$", line) for line in listing.splitlines()]
        assert all(lines), listing
        return {m.group(2): int(m.group(1)) for m in lines if m}


def minio_client(gateway: Gateway) -> Minio:
    """The MinIO SDK's client for the gateway's plain-HTTP listener."""
    return Minio(
        gateway.url.removeprefix("http://"),
        access_key=GATEWAY_USER.access_key_id,
        secret_key=GATEWAY_USER.secret_access_key,
        secure=False,
        region=REGION,  # no GetBucketLocation first
    )


def minio_read(client: Minio, bucket: str, key: str, **kwargs: Any) -> bytes:
    """``get_object`` read whole, its connection given back."""
    response = client.get_object(bucket, key, **kwargs)
    try:
        data: bytes = response.read()
        return data
    finally:
        response.close()
        response.release_conn()


def s3fs_filesystem(gateway: Gateway) -> s3fs.S3FileSystem:
    """An uncached s3fs filesystem on the gateway."""
    return s3fs.S3FileSystem(
        key=GATEWAY_USER.access_key_id,
        secret=GATEWAY_USER.secret_access_key,
        endpoint_url=gateway.url,
        client_kwargs={"region_name": REGION},
        config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}},
        skip_instance_cache=True,
        use_listings_cache=False,
        # Parts of exactly block_size. By default s3fs uploads whatever its buffer
        # holds once it reaches block_size, and through the gateway every part but
        # the last must be a whole number of chunks (it answers InvalidPart otherwise).
        fixed_upload_size=True,
    )

"""Bucket maintenance against the backend: ``verify`` and ``encrypt-existing``.

Both run with the gateway's settings and talk to the backend directly (the
client of :mod:`addons.rewrap`), visiting objects in key order and reporting
every one, so an interrupted run resumes with ``--start-after``.

``encrypt-existing`` migrates objects stored before the gateway. An object is
downloaded as a stream, encrypted into a temporary file (memory stays at about
one chunk) and written back with its envelope in one PUT. A PUT replaces an
object atomically, so at any moment an object is either the plaintext or the
complete ciphertext, and the envelope in its metadata marks it as done: a
re-run after a crash skips it instead of encrypting it twice. The download is
conditional on the ETag listed, and the ETag is checked again just before the
upload, so an object overwritten meanwhile is left alone and reported.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import ClientError

from addons.bucketwalk import resume_hint, walk_bucket
from addons.rewrap import ENVELOPE_META_KEY, backend_client, preserved_headers
from addons.settings import Settings
from crypto import DataKey, Envelope, FrameEncryptor, ObjectDecryptor

READ_SIZE = 1024 * 1024
# The largest object one PUT can store on S3.
MAX_SINGLE_PUT = 5 * 1024**3


@dataclass
class VerifyReport:
    ok: int = 0
    failed: int = 0
    unencrypted: int = 0
    last_key: str = ""


@dataclass
class MigrateReport:
    encrypted: int = 0
    already_encrypted: int = 0
    changed: int = 0  # overwritten while being migrated: left as found
    too_large: int = 0
    failed: int = 0
    last_key: str = ""


def _envelope_value(answer: dict[str, Any]) -> str | None:
    metadata = {name.lower(): value for name, value in answer.get("Metadata", {}).items()}
    value = metadata.get(ENVELOPE_META_KEY)
    return None if value is None else str(value)


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        while piece := body.read(READ_SIZE):
            yield piece
    finally:
        body.close()


# --------------------------------------------------------------------------- verify


def verify_bucket(
    settings: Settings,
    bucket: str,
    *,
    prefix: str = "",
    start_after: str = "",
    report: Callable[[str], None] = print,
) -> VerifyReport:
    """Read every object from the backend and decrypt it completely."""
    client = backend_client(settings)
    result = VerifyReport()
    walk_bucket(
        client,
        bucket,
        prefix=prefix,
        start_after=start_after,
        visit=lambda entry: _verify_object(client, settings, bucket, entry["Key"]),
        describe=lambda outcome, entry: (
            f"unencrypted {entry['Key']}" if outcome == "unencrypted" else None
        ),
        tally=result,
        report=report,
    )
    report(
        f"done: {result.ok} OK, {result.failed} failed, {result.unencrypted} not encrypted"
        + resume_hint(result)
    )
    return result


def _verify_object(client: Any, settings: Settings, bucket: str, key: str) -> str:
    answer = client.get_object(Bucket=bucket, Key=key)
    value = _envelope_value(answer)
    if value is None:
        answer["Body"].close()
        return "unencrypted"
    envelope = Envelope.decode(value)
    with envelope.open(settings.keyring) as data_key:
        decryptor = ObjectDecryptor(
            data_key, expected_frame=envelope.frame, multipart=envelope.multipart
        )
    try:
        for piece in _chunks(answer["Body"]):
            decryptor.update(piece)
        decryptor.finalize()
    finally:
        decryptor.close()
    return "ok"


# --------------------------------------------------------------------------- encrypt-existing


def encrypt_existing(
    settings: Settings,
    bucket: str,
    *,
    prefix: str = "",
    start_after: str = "",
    pause: float = 0.0,
    report: Callable[[str], None] = print,
) -> MigrateReport:
    """Encrypt, in place, every object of ``bucket`` that has no envelope yet."""
    client = backend_client(settings)
    result = MigrateReport()
    seen = 0

    def visit(entry: dict[str, Any]) -> str:
        nonlocal seen
        seen += 1
        outcome = _encrypt_object(client, settings, bucket, entry["Key"], entry)
        if pause and outcome == "encrypted":
            time.sleep(pause)
        return outcome

    def describe(outcome: str, entry: dict[str, Any]) -> str | None:
        key = entry["Key"]
        if outcome == "encrypted":
            return f"encrypted {key} ({entry['Size']} bytes) [{seen} seen]"
        if outcome == "changed":
            return f"changed   {key}: overwritten during the migration, left as it is"
        if outcome == "too_large":
            return f"too large {key}: over {MAX_SINGLE_PUT} bytes, left as it is"
        return None

    walk_bucket(
        client,
        bucket,
        prefix=prefix,
        start_after=start_after,
        visit=visit,
        describe=describe,
        tally=result,
        report=report,
    )
    report(
        f"done: {result.encrypted} encrypted, {result.already_encrypted} already encrypted,"
        f" {result.changed} changed meanwhile, {result.too_large} too large,"
        f" {result.failed} failed" + resume_hint(result)
    )
    return result


def _encrypt_object(
    client: Any, settings: Settings, bucket: str, key: str, entry: dict[str, Any]
) -> str:
    if entry["Size"] > MAX_SINGLE_PUT:
        return "too_large"
    try:
        answer = client.get_object(Bucket=bucket, Key=key, IfMatch=entry["ETag"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            return "changed"
        raise
    if _envelope_value(answer) is not None:
        answer["Body"].close()
        return "already_encrypted"
    with tempfile.TemporaryFile(prefix="s3gw-migrate-") as spool:
        with DataKey.generate(settings.algorithm, settings.chunk_size) as data_key:
            encryptor = FrameEncryptor(data_key, int(answer["ContentLength"]))
            envelope = Envelope.seal(data_key, settings.keyring, frame=encryptor.header)
        _encrypt_into(encryptor, answer["Body"], spool)
        spool.seek(0)
        # The narrow window between this check and the PUT is the only one in
        # which a concurrent writer could be overwritten; S3 has no portable
        # conditional PUT on an ETag.
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ETag"] != entry["ETag"] or _envelope_value(head) is not None:
            return "changed"
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": spool,
            "ContentLength": encryptor.ciphertext_length,
            "Metadata": {
                **{k.lower(): v for k, v in answer.get("Metadata", {}).items()},
                ENVELOPE_META_KEY: envelope.encode(),
            },
        }
        params.update(preserved_headers(answer))
        client.put_object(**params)
    return "encrypted"


def _encrypt_into(encryptor: FrameEncryptor, body: Any, out: IO[bytes]) -> None:
    try:
        for piece in _chunks(body):
            for block in encryptor.update(piece):
                out.write(block)
        for block in encryptor.finalize():
            out.write(block)
    finally:
        encryptor.close()

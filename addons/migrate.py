"""Bucket maintenance against the backend: ``verify`` and ``encrypt-existing``.

Both run with the gateway's settings and talk to the backend directly (the
client of :mod:`addons.rewrap`), visiting objects in key order and reporting
every one, so an interrupted run resumes with ``--start-after``.

``encrypt-existing`` migrates objects stored before the gateway. An object is
downloaded as a stream, encrypted into a temporary file (memory stays at about
one chunk) and written back with its envelope in one PUT; an object over the
multipart threshold (by default S3's 5 GiB single-PUT limit) is written as a
multipart upload instead, one part in the temporary file at a time, in parts
of one size, as the gateway itself stores them. A PUT, like the completion of
a multipart upload, replaces an object atomically, so at any moment an object
is either the plaintext or the complete ciphertext, and the envelope in its
metadata marks it as done: a re-run after a crash skips it instead of
encrypting it twice (a crash during a multipart upload leaves an incomplete
upload behind, for the bucket's lifecycle rule to abort).

A concurrent client write is never overwritten where the backend honours
conditional writes: the download is conditional on the ETag listed, and the
write on the same ETag (``If-Match`` on the PUT or on the completion, as AWS
S3 supports since 2024). For backends that ignore ``If-Match`` the ETag is
also checked with a HEAD just before the write, which leaves only the moment
between that check and the write. An object overwritten meanwhile is left as
it is and reported.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from addons.bucketwalk import resume_hint, walk_bucket
from addons.rewrap import ENVELOPE_META_KEY, backend_client, preserved_headers
from addons.settings import Settings
from crypto import DataKey, Envelope, FrameEncryptor, LengthMismatch, ObjectDecryptor

READ_SIZE = 1024 * 1024
# The largest object one PUT can store on S3.
MAX_SINGLE_PUT = 5 * 1024**3
# S3's multipart limits: parts but the last at least 5 MiB, at most 10,000 parts.
MIN_PART_SIZE = 5 * 1024**2
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 64 * 1024**2


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


def check_sizes(multipart_threshold: int, part_size: int) -> None:
    """Refuse sizes S3 cannot store (``ValueError``)."""
    if not MIN_PART_SIZE <= part_size <= MAX_SINGLE_PUT:
        raise ValueError(f"part size {part_size} is outside 5 MiB .. 5 GiB")
    if not 0 <= multipart_threshold <= MAX_SINGLE_PUT:
        raise ValueError(f"multipart threshold {multipart_threshold} is over 5 GiB")


def encrypt_existing(
    settings: Settings,
    bucket: str,
    *,
    prefix: str = "",
    start_after: str = "",
    pause: float = 0.0,
    multipart_threshold: int = MAX_SINGLE_PUT,
    part_size: int = DEFAULT_PART_SIZE,
    before_write: Callable[[str], None] | None = None,
    report: Callable[[str], None] = print,
) -> MigrateReport:
    """Encrypt, in place, every object of ``bucket`` that has no envelope yet.

    Objects larger than ``multipart_threshold`` bytes are written as multipart
    uploads in parts of ``part_size`` plaintext bytes (rounded up to whole
    chunks, and up to what 10,000 parts need). ``before_write`` is called with
    each key right before its encrypted version is written (tests use it to
    write concurrently).
    """
    check_sizes(multipart_threshold, part_size)
    client = backend_client(settings)
    result = MigrateReport()
    seen = 0
    writer = _Writer(client, settings, bucket, multipart_threshold, part_size, before_write)

    def visit(entry: dict[str, Any]) -> str:
        nonlocal seen
        seen += 1
        outcome = writer.encrypt_object(entry)
        if pause and outcome == "encrypted":
            time.sleep(pause)
        return outcome

    def describe(outcome: str, entry: dict[str, Any]) -> str | None:
        key = entry["Key"]
        if outcome == "encrypted":
            how = ", multipart" if entry["Size"] > multipart_threshold else ""
            return f"encrypted {key} ({entry['Size']} bytes{how}) [{seen} seen]"
        if outcome == "changed":
            return f"changed   {key}: overwritten during the migration, left as it is"
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
        f" {result.changed} changed meanwhile, {result.failed} failed" + resume_hint(result)
    )
    return result


def _precondition_failed(error: ClientError) -> bool:
    """The backend refused a conditional request: the object is not the one read
    (AWS answers 409 ConditionalRequestConflict to a write racing another one)."""
    code = error.response.get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict")


class _Writer:
    """Encrypts one object at a time and writes it back, conditional on its ETag."""

    def __init__(
        self,
        client: Any,
        settings: Settings,
        bucket: str,
        multipart_threshold: int,
        part_size: int,
        before_write: Callable[[str], None] | None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._bucket = bucket
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._before_write = before_write

    def encrypt_object(self, entry: dict[str, Any]) -> str:
        key, etag = entry["Key"], entry["ETag"]
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=key, IfMatch=etag)
        except ClientError as error:
            if _precondition_failed(error):
                return "changed"
            raise
        if _envelope_value(answer) is not None:
            answer["Body"].close()
            return "already_encrypted"
        metadata = {k.lower(): v for k, v in answer.get("Metadata", {}).items()}
        size = int(answer["ContentLength"])
        try:
            if size > self._threshold:
                return self._write_multipart(key, etag, answer, metadata, size)
            return self._write_single(key, etag, answer, metadata, size)
        except ClientError as error:
            if _precondition_failed(error):
                return "changed"  # written meanwhile: the backend refused our write
            raise

    def _ready_to_write(self, key: str, etag: str) -> bool:
        """The object is still the one read (a HEAD, for backends that ignore If-Match)."""
        head = self._client.head_object(Bucket=self._bucket, Key=key)
        unchanged = head["ETag"] == etag and _envelope_value(head) is None
        if unchanged and self._before_write is not None:
            self._before_write(key)
        return unchanged

    def _write_single(
        self, key: str, etag: str, answer: dict[str, Any], metadata: dict[str, str], size: int
    ) -> str:
        settings = self._settings
        with tempfile.TemporaryFile(prefix="s3gw-migrate-") as spool:
            with DataKey.generate(settings.algorithm, settings.chunk_size) as data_key:
                encryptor = FrameEncryptor(data_key, size)
                envelope = Envelope.seal(data_key, settings.keyring, frame=encryptor.header)
            _encrypt_into(encryptor, _chunks(answer["Body"]), spool)
            spool.seek(0)
            if not self._ready_to_write(key, etag):
                return "changed"
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=spool,
                ContentLength=encryptor.ciphertext_length,
                IfMatch=etag,
                Metadata={**metadata, ENVELOPE_META_KEY: envelope.encode()},
                **preserved_headers(answer),
            )
        return "encrypted"

    def _write_multipart(
        self, key: str, etag: str, answer: dict[str, Any], metadata: dict[str, str], size: int
    ) -> str:
        settings = self._settings
        chunk = settings.chunk_size
        # Parts of one size, in whole chunks (the gateway's ranged reads rely on both).
        part_size = max(self._part_size, -(-size // MAX_PARTS))
        part_size = -(-part_size // chunk) * chunk
        data_key = DataKey.generate(settings.algorithm, chunk)
        try:
            envelope = Envelope.seal(data_key, settings.keyring, multipart=True)
            upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                Metadata={**metadata, ENVELOPE_META_KEY: envelope.encode()},
                **preserved_headers(answer),
            )["UploadId"]
            try:
                parts = self._upload_parts(
                    key, upload_id, data_key, answer["Body"], size, part_size
                )
                if not self._ready_to_write(key, etag):
                    self._abort(key, upload_id)
                    return "changed"
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfMatch=etag,
                )
            except BaseException:
                self._abort(key, upload_id)
                raise
        finally:
            data_key.close()
            answer["Body"].close()
        return "encrypted"

    def _upload_parts(
        self, key: str, upload_id: str, data_key: DataKey, body: Any, size: int, part_size: int
    ) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        pieces = _Pieces(_chunks(body))
        for number, offset in enumerate(range(0, size, part_size), 1):
            length = min(part_size, size - offset)
            with tempfile.TemporaryFile(prefix="s3gw-migrate-") as spool:
                encryptor = FrameEncryptor(data_key, length, part_number=number)
                _encrypt_into(encryptor, pieces.take(length), spool)
                spool.seek(0)
                answer = self._client.upload_part(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=spool,
                    ContentLength=encryptor.ciphertext_length,
                )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        return parts

    def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)


class _Pieces:
    """The rest of a stream of pieces, so parts can take exact byte counts from it."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._left = b""

    def take(self, length: int) -> Iterator[bytes]:
        while length > 0:
            piece = self._left or next(self._pieces, b"")
            if not piece:
                raise LengthMismatch("the object ended before its listed size")
            self._left = piece[length:]
            yield piece[:length]
            length -= min(length, len(piece))


def _encrypt_into(encryptor: FrameEncryptor, pieces: Iterable[bytes], out: IO[bytes]) -> None:
    try:
        for piece in pieces:
            for block in encryptor.update(piece):
                out.write(block)
        for block in encryptor.finalize():
            out.write(block)
    finally:
        encryptor.close()

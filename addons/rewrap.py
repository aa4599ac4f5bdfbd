"""Key rotation: re-wrap the data keys of stored objects under the active KEK.

Runs against the backend directly with the gateway's settings. Each object is
re-wrapped with a metadata-only server-side copy onto itself (no data is read
or re-encrypted), conditional on the ETag seen, so a concurrent overwrite is
never paired with a stale envelope. Objects are visited in key order and every
one is reported, so an interrupted run resumes with ``--start-after``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config as BotocoreConfig

from addons.bucketwalk import resume_hint, walk_bucket
from addons.settings import Settings
from crypto import Envelope

ENVELOPE_META_KEY = "s3gw"
# Headers a REPLACE copy would otherwise reset to their defaults.
_PRESERVED = (
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "ContentType",
    "Expires",
    "WebsiteRedirectLocation",
)


@dataclass
class RewrapReport:
    rewrapped: int = 0
    already_current: int = 0
    unencrypted: int = 0
    failed: int = 0
    last_key: str = ""


def preserved_headers(answer: dict[str, Any]) -> dict[str, Any]:
    """The stored object's headers a REPLACE copy or a re-upload must repeat."""
    return {field: answer[field] for field in (*_PRESERVED, "StorageClass") if answer.get(field)}


def backend_client(settings: Settings) -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=settings.backend.url,
        region_name=settings.backend.region,
        aws_access_key_id=settings.backend.access_key_id,
        aws_secret_access_key=settings.backend.secret_access_key,
        verify=settings.backend.ca_bundle or None,
        # botocore's "standard" retries: connection errors, timeouts, 500/502/503/504 and
        # throttling, with exponential backoff and full jitter (ADR 0008).
        config=BotocoreConfig(
            s3={"addressing_style": "path"},
            connect_timeout=settings.backend.connect_timeout,
            read_timeout=settings.backend.read_timeout,
            retries={"total_max_attempts": 1 + settings.backend.retries, "mode": "standard"},
        ),
    )


def rewrap_bucket(
    settings: Settings,
    bucket: str,
    *,
    prefix: str = "",
    start_after: str = "",
    dry_run: bool = False,
    report: Callable[[str], None] = print,
) -> RewrapReport:
    client = backend_client(settings)
    active = settings.keyring.active_key_id
    result = RewrapReport()
    walk_bucket(
        client,
        bucket,
        prefix=prefix,
        start_after=start_after,
        visit=lambda entry: _rewrap_object(client, settings, bucket, entry["Key"], active, dry_run),
        describe=lambda outcome, entry: (
            f"rewrapped  {entry['Key']}{' (dry run)' if dry_run else ''}"
            if outcome == "rewrapped"
            else None
        ),
        tally=result,
        report=report,
    )
    report(
        f"done: {result.rewrapped} re-wrapped, {result.already_current} already under {active!r},"
        f" {result.unencrypted} not encrypted, {result.failed} failed" + resume_hint(result)
    )
    return result


def _rewrap_object(
    client: Any, settings: Settings, bucket: str, key: str, active: str, dry_run: bool
) -> str:
    head = client.head_object(Bucket=bucket, Key=key)
    metadata = {name.lower(): value for name, value in head.get("Metadata", {}).items()}
    value = metadata.pop(ENVELOPE_META_KEY, None)
    if value is None:
        return "unencrypted"
    envelope = Envelope.decode(value)
    if envelope.key_id == active:
        return "already_current"
    rewrapped = envelope.rewrap(settings.keyring)
    if dry_run:
        return "rewrapped"
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "CopySource": {"Bucket": bucket, "Key": key},
        "CopySourceIfMatch": head["ETag"],
        "MetadataDirective": "REPLACE",
        "Metadata": {**metadata, ENVELOPE_META_KEY: rewrapped.encode()},
    }
    params.update(preserved_headers(head))
    client.copy_object(**params)
    return "rewrapped"

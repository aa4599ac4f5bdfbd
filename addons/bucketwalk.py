"""Visit every object of a bucket in key order, for the maintenance commands.

``rewrap``, ``verify`` and ``encrypt-existing`` share this loop: each object
gets one outcome, counted on a tally; a failure is reported and counted
without stopping the walk; the last key visited is kept so an interrupted run
resumes with ``--start-after``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from crypto import CryptoError

FAILED = "failed"
# What one object's failure may raise; anything else is a bug and stops the walk.
_OBJECT_ERRORS = (ClientError, BotoCoreError, CryptoError, OSError)


class Tally(Protocol):
    """A dataclass with one int field per outcome, ``failed`` and ``last_key``."""

    failed: int
    last_key: str


def list_objects(
    client: Any, bucket: str, prefix: str, start_after: str
) -> Iterator[dict[str, Any]]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, StartAfter=start_after
    )
    for page in pages:
        yield from page.get("Contents", [])


def walk_bucket(
    client: Any,
    bucket: str,
    *,
    prefix: str,
    start_after: str,
    visit: Callable[[dict[str, Any]], str],
    describe: Callable[[str, dict[str, Any]], str | None],
    tally: Tally,
    report: Callable[[str], None],
) -> None:
    """Call ``visit`` on each listed object and count the outcome it returns."""
    for entry in list_objects(client, bucket, prefix, start_after):
        key = entry["Key"]
        try:
            outcome = visit(entry)
        except _OBJECT_ERRORS as error:
            outcome = FAILED
            report(f"failed      {key}: {type(error).__name__}: {error}")
        else:
            line = describe(outcome, entry)
            if line:
                report(line)
        setattr(tally, outcome, getattr(tally, outcome) + 1)
        tally.last_key = key


def resume_hint(tally: Tally) -> str:
    return f"; last key {tally.last_key!r}" if tally.last_key else ""

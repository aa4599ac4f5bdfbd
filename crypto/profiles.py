"""Storage-provider profiles: how much object metadata each backend accepts.

The envelope (about 150 bytes) lives in one ``x-amz-meta-*`` value, so it
shares the user-metadata budget with the application's own metadata. AWS
counts that budget as the UTF-8 bytes of every key (without the
``x-amz-meta-`` prefix) plus every value. When the application's metadata and
the envelope would not fit, the gateway refuses the upload with S3's own
``MetadataTooLarge`` error instead of storing an object it could not decrypt;
see docs/ENCRYPTION_DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crypto.errors import FormatError

META_PREFIX = "x-amz-meta-"


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    user_metadata_limit: int
    header_limit: int
    warn_ratio: float = 0.8


PROFILES: dict[str, ProviderProfile] = {
    p.name: p
    for p in (
        ProviderProfile("aws", 2048, 8192),
        ProviderProfile("minio", 2048, 8192),
        ProviderProfile("wasabi", 2048, 8192),
        ProviderProfile("hetzner", 2048, 8192),
        ProviderProfile("ceph", 2048, 8192),
        # Unknown backends: assume the smallest budget of the ones above.
        ProviderProfile("generic", 2048, 8192),
    )
}


def get_profile(name: str) -> ProviderProfile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise FormatError(f"unknown provider profile {name!r}; one of {sorted(PROFILES)}") from None


@dataclass(frozen=True)
class MetadataBudget:
    used: int
    limit: int
    near_limit: bool

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit


def metadata_budget(profile: ProviderProfile, headers: Iterable[tuple[str, str]]) -> MetadataBudget:
    """Budget used by the ``x-amz-meta-*`` entries among ``headers``."""
    used = 0
    for name, value in headers:
        if name.lower().startswith(META_PREFIX):
            # Wire bytes: mitmproxy hands over non-UTF-8 header bytes as surrogate escapes.
            name_bytes = name[len(META_PREFIX) :].encode("utf-8", "surrogateescape")
            used += len(name_bytes) + len(value.encode("utf-8", "surrogateescape"))
    limit = profile.user_metadata_limit
    return MetadataBudget(used, limit, used > limit * profile.warn_ratio)

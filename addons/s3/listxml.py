"""Bucket listings (ListObjects v1/v2, ListObjectVersions) with plaintext sizes.

The backend lists what it stores, so every ``<Size>`` of a ``<Contents>`` or
``<Version>`` entry is a ciphertext length. :func:`plaintext_listing` replaces
those numbers by the plaintext lengths the size math gives for the gateway's
chunk size, and changes nothing else: the other bytes of the document
(namespace, element order, escaping, url-encoded keys, whitespace) are copied
as they are, so clients parse exactly what the backend would have sent for the
plaintext objects. ETags are not touched: the gateway shows the backend's ETag
everywhere (HEAD, GET, listings), which for encrypted objects is a digest of
the ciphertext (ADR 0006). Sizes come from the size math alone, without a HEAD
per key (ADR 0004).

The document is parsed with ``defusedxml`` (no DTDs, no entity declarations,
no external references) and only up to :data:`MAX_LISTING_BYTES`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Final

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from addons.s3.multipartxml import multipart_part_count
from addons.s3.xmledit import local_name, splice, text_start
from crypto import FormatError
from crypto.sizes import aligned_frames_plaintext_length, plaintext_length

__all__ = [
    "MAX_LISTING_BYTES",
    "ListingError",
    "listed_plaintext_size",
    "plaintext_listing",
]

# S3 returns at most 1000 entries per page; with 1 KiB keys that is about
# 2 MiB of XML. Anything far larger is not a listing we should buffer.
MAX_LISTING_BYTES: Final = 16 * 1024 * 1024

# Root element -> the entries that carry an object size.
_SIZED_ENTRIES: Final = {"ListBucketResult": "Contents", "ListVersionsResult": "Version"}
# Up to 19 digits: any object size, and far below int()'s digit limit.
_SIZE_TEXT = re.compile(r"\s*([0-9]{1,19})\s*", re.ASCII)


class ListingError(ValueError):
    """The backend's listing is not a document the gateway can read or rewrite."""


def listed_plaintext_size(stored_size: int, etag: str | None, chunk_size: int) -> int:
    """The plaintext size of a listed object stored as ``stored_size`` bytes.

    A size no S3G1 object can have (shorter than an empty frame, or between two
    valid lengths) belongs to an object stored before the gateway and is
    returned as it is.
    """
    parts = multipart_part_count(etag)
    try:
        if parts is None:
            return plaintext_length(stored_size, chunk_size)
        # The gateway does not write multipart objects yet: this assumes the
        # layout it will use (one frame per part, parts of whole chunks).
        size = aligned_frames_plaintext_length(stored_size, parts, chunk_size)
    except FormatError:
        return stored_size
    # Every part but the last holds at least one whole chunk.
    return size if size >= (parts - 1) * chunk_size else stored_size


@dataclass
class _Entry:
    """One ``<Contents>`` or ``<Version>``: its ETag and its ``<Size>`` texts."""

    etag: str | None = None
    sizes: list[tuple[str, int]] = field(default_factory=list)  # (text, offset of "</")


class _EntryCollector:
    """Parser target collecting the sized entries of a listing, without building a tree.

    ``expat`` must be set to the parser's expat object before feeding: at an end
    tag its ``CurrentByteIndex`` is the offset of ``</``, which is where the
    element's text ends in the raw document.
    """

    def __init__(self) -> None:
        self.expat: Any = None
        self.root = ""
        self.entries: list[_Entry] = []
        self._depth = 0
        self._entry: _Entry | None = None
        self._text: list[str] | None = None  # of the ETag or Size being read

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._depth += 1
        if self._depth == 1:
            self.root = local_name(tag)
        elif self._depth == 2 and local_name(tag) == _SIZED_ENTRIES.get(self.root):
            self._entry = _Entry()
        elif self._depth == 3 and self._entry is not None and local_name(tag) in ("ETag", "Size"):
            self._text = []

    def data(self, text: str) -> None:
        if self._text is not None:
            self._text.append(text)

    def end(self, tag: str) -> None:
        if self._depth == 3 and self._entry is not None and self._text is not None:
            text = "".join(self._text)
            if local_name(tag) == "Size":
                self._entry.sizes.append((text, self.expat.CurrentByteIndex))
            else:
                self._entry.etag = text
            self._text = None
        elif self._depth == 2 and self._entry is not None:
            self.entries.append(self._entry)
            self._entry = None
        self._depth -= 1

    def close(self) -> None:
        pass


def _parse(document: bytes) -> _EntryCollector:
    collector = _EntryCollector()
    parser = DefusedXMLParser(target=collector, forbid_dtd=True)
    collector.expat = parser.parser
    try:
        parser.feed(document)
        parser.close()
    # LookupError: an encoding declaration Python does not know.
    except (ET.ParseError, DefusedXmlException, LookupError) as error:
        raise ListingError(f"the listing is not well-formed XML: {error}") from None
    return collector


def plaintext_listing(
    document: bytes, chunk_size: int, *, max_bytes: int = MAX_LISTING_BYTES
) -> bytes:
    """``document`` with each entry's stored size replaced by its plaintext size.

    Raises :class:`ListingError` for anything but a well-formed
    ``ListBucketResult`` or ``ListVersionsResult`` of at most ``max_bytes``.
    Returns ``document`` itself when no size changes.
    """
    if len(document) > max_bytes:
        raise ListingError(f"the listing is larger than {max_bytes} bytes")
    listing = _parse(document)
    if listing.root not in _SIZED_ENTRIES:
        raise ListingError(f"unexpected root element {listing.root!r}")
    replacements: list[tuple[int, int, bytes]] = []  # (start, end, new text)
    for entry in listing.entries:
        for text, end in entry.sizes:
            match = _SIZE_TEXT.fullmatch(text)
            if match is None:
                raise ListingError(f"not an object size: {text!r}")
            stored = int(match[1])
            listed = listed_plaintext_size(stored, entry.etag, chunk_size)
            if listed == stored:
                continue
            try:
                start = text_start(document, text, end)
            except ValueError:
                raise ListingError(f"cannot locate the size {text!r} in the listing") from None
            replacements.append((start, end, str(listed).encode("ascii")))
    return splice(document, replacements)

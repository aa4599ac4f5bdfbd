"""Multipart upload documents: the CompleteMultipartUpload request, and the
InitiateMultipartUpload and ListParts results the gateway rewrites.

Every document is parsed with ``defusedxml`` (no DTDs, no entity
declarations, no external references) under a size and an element-count
limit. Client input that is not a valid parts list gets S3's own error
(``MalformedXML``, ``InvalidPartOrder``, ``InvalidArgument``); backend
documents that cannot be read raise :class:`BackendDocumentError`.

Results are rewritten in place, byte for byte except for the replaced texts
(upload ids, part sizes), so clients parse what the backend sent.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from addons.s3.errors import S3Error
from addons.s3.xmledit import element_end, local_name, splice, text_start

__all__ = [
    "CHECKSUM_ELEMENTS",
    "MAX_BACKEND_DOCUMENT",
    "MAX_COMPLETE_BODY",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "BackendDocumentError",
    "CompletedPart",
    "ListedPart",
    "PartsPage",
    "backend_number",
    "complete_request_xml",
    "multipart_part_count",
    "normalized_etag",
    "parse_backend_document",
    "parse_complete_request",
    "parse_parts_page",
    "part_number",
    "rewrite_texts",
    "upload_id_of",
]

MIN_PART_SIZE: Final = 5 * 1024 * 1024  # every part but the last, as S3 (in plaintext)
MAX_PART_SIZE: Final = 5 * 1024**3
MAX_PARTS: Final = 10_000
# 10,000 parts with a checksum each are about 1.5 MB of XML, indented maybe 2 MB.
MAX_COMPLETE_BODY: Final = 4 * 1024 * 1024
_MAX_COMPLETE_ELEMENTS: Final = 1 + MAX_PARTS * 8
# Backend documents: one ListParts page holds at most 1000 parts.
MAX_BACKEND_DOCUMENT: Final = 8 * 1024 * 1024
_MAX_BACKEND_ELEMENTS: Final = 100_000

S3_NAMESPACE: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
# The elements that carry a part's (or an object's) checksum, one per algorithm.
CHECKSUM_ELEMENTS: Final = frozenset(
    {"ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"}
)
_DIGITS = re.compile(r"\s*([0-9]{1,19})\s*", re.ASCII)
# A multipart object's ETag: "<hex digest>-<part count>".
_MULTIPART_ETAG = re.compile(r'\s*"?[0-9A-Fa-f]+-([1-9][0-9]{0,4})"?\s*')


class BackendDocumentError(ValueError):
    """A backend answer the gateway cannot read or rewrite."""


class _TooLarge(Exception):
    pass


def multipart_part_count(etag: str | None) -> int | None:
    """The part count in a multipart object's ETag (``"...-N"``), if it has one."""
    match = _MULTIPART_ETAG.fullmatch(etag or "")
    count = int(match[1]) if match else None
    return count if count is not None and count <= MAX_PARTS else None


def normalized_etag(etag: str) -> str:
    return etag.strip().strip('"')


def part_number(text: str | None) -> int:
    """A ``partNumber`` (query parameter or Complete element), checked as S3 does."""
    match = _DIGITS.fullmatch(text or "")
    number = int(match[1]) if match else 0
    if not 1 <= number <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
            extra={"ArgumentName": "partNumber", "ArgumentValue": text or ""},
        )
    return number


class _Target:
    """Builds the tree, counts elements, and notes where chosen elements lie.

    ``located`` maps a path of local names below the root (``("Part", "Size")``)
    to the byte offsets of ``</`` of each such element, in document order;
    ``started`` maps the paths in ``starts`` to the offsets of their ``<``.
    """

    def __init__(
        self,
        max_elements: int,
        locate: Iterable[tuple[str, ...]] = (),
        starts: Iterable[tuple[str, ...]] = (),
    ) -> None:
        self._builder = ET.TreeBuilder()
        self._left = max_elements
        self._path: list[str] = []
        self._starts = frozenset(starts)
        self._locate = frozenset(locate) | self._starts
        self.expat: Any = None
        self.located: dict[tuple[str, ...], list[int]] = {}
        self.started: dict[tuple[str, ...], list[int]] = {}

    def start(self, tag: str, attrib: dict[str, str]) -> ET.Element:
        self._left -= 1
        if self._left < 0:
            raise _TooLarge
        self._path.append(local_name(tag))
        path = tuple(self._path[1:])
        if path in self._starts:
            self.started.setdefault(path, []).append(self.expat.CurrentByteIndex)
        return self._builder.start(tag, attrib)

    def data(self, text: str) -> None:
        self._builder.data(text)

    def end(self, tag: str) -> ET.Element:
        path = tuple(self._path[1:])
        if path in self._locate:
            self.located.setdefault(path, []).append(self.expat.CurrentByteIndex)
        self._path.pop()
        return self._builder.end(tag)

    def close(self) -> ET.Element:
        return self._builder.close()


def _parse(document: bytes, target: _Target) -> ET.Element:
    """Raises ``ValueError`` (malformed), ``_TooLarge`` or ``DefusedXmlException``."""
    parser = DefusedXMLParser(target=target, forbid_dtd=True)
    target.expat = parser.parser
    try:
        parser.feed(document)
        root: ET.Element = parser.close()
    except (ET.ParseError, LookupError) as error:  # LookupError: an unknown encoding=
        raise ValueError(str(error)) from None
    return root


# --------------------------------------------------------------------------- Complete


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str


def parse_complete_request(body: bytes) -> list[CompletedPart]:
    """The parts list of a CompleteMultipartUpload body, validated as S3 does."""
    if len(body) > MAX_COMPLETE_BODY:
        raise S3Error("MalformedXML")
    try:
        root = _parse(body, _Target(_MAX_COMPLETE_ELEMENTS))
    except (ValueError, _TooLarge, DefusedXmlException):
        raise S3Error("MalformedXML") from None
    if local_name(root.tag) != "CompleteMultipartUpload" or (root.text or "").strip():
        raise S3Error("MalformedXML")
    parts: list[CompletedPart] = []
    for element in root:
        if local_name(element.tag) != "Part" or (element.tail or "").strip():
            raise S3Error("MalformedXML")
        parts.append(_completed_part(element))
    if not parts or len(parts) > MAX_PARTS:
        raise S3Error("MalformedXML")
    for previous, part in itertools.pairwise(parts):
        if part.number <= previous.number:
            raise S3Error("InvalidPartOrder")
    return parts


def _completed_part(element: ET.Element) -> CompletedPart:
    fields: dict[str, str] = {}
    if (element.text or "").strip():
        raise S3Error("MalformedXML")
    for child in element:
        name = local_name(child.tag)
        if (
            name not in ("PartNumber", "ETag", *CHECKSUM_ELEMENTS)
            or name in fields
            or len(child)
            or (child.tail or "").strip()
        ):
            raise S3Error("MalformedXML")
        fields[name] = child.text or ""
    if "PartNumber" not in fields or "ETag" not in fields:
        raise S3Error("MalformedXML")
    match = _DIGITS.fullmatch(fields["PartNumber"])
    if match is None:
        raise S3Error("MalformedXML")
    return CompletedPart(part_number(match[1]), fields["ETag"].strip())


def complete_request_xml(parts: Sequence[CompletedPart]) -> bytes:
    """The CompleteMultipartUpload body the backend gets: numbers and ETags only
    (the client's part checksums are of plaintext; the backend never saw them)."""
    items = "".join(
        f"<Part><PartNumber>{part.number}</PartNumber><ETag>{escape(part.etag)}</ETag></Part>"
        for part in parts
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<CompleteMultipartUpload xmlns="{S3_NAMESPACE}">{items}</CompleteMultipartUpload>'
    ).encode()


# --------------------------------------------------------------------------- backend results


def _parse_backend(
    document: bytes,
    locate: Iterable[tuple[str, ...]] = (),
    starts: Iterable[tuple[str, ...]] = (),
) -> tuple[ET.Element, _Target]:
    if len(document) > MAX_BACKEND_DOCUMENT:
        raise BackendDocumentError("the document is too large")
    target = _Target(_MAX_BACKEND_ELEMENTS, locate, starts)
    try:
        return _parse(document, target), target
    except (ValueError, _TooLarge, DefusedXmlException) as error:
        raise BackendDocumentError(f"not a readable document: {error!r}") from None


def parse_backend_document(document: bytes) -> ET.Element:
    """The root of a backend answer; :class:`BackendDocumentError` if unreadable."""
    return _parse_backend(document)[0]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if local_name(child.tag) == name:
            return child.text or ""
    return None


def upload_id_of(document: bytes) -> str:
    """The ``UploadId`` of an InitiateMultipartUpload result."""
    root, _ = _parse_backend(document)
    upload_id = _child_text(root, "UploadId")
    if not upload_id:
        raise BackendDocumentError("the result has no UploadId")
    return upload_id.strip()


@dataclass(frozen=True)
class ListedPart:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class PartsPage:
    parts: list[ListedPart]
    next_marker: int | None  # None: this was the last page


def backend_number(text: str | None, what: str) -> int:
    """A non-negative number in a backend document (a size, a part number)."""
    match = _DIGITS.fullmatch(text or "")
    if match is None:
        raise BackendDocumentError(f"not a {what}: {text!r}")
    return int(match[1])


def parse_parts_page(document: bytes) -> PartsPage:
    """One page of a backend's ListParts result."""
    root, _ = _parse_backend(document)
    parts = [
        ListedPart(
            backend_number(_child_text(element, "PartNumber"), "part number"),
            normalized_etag(_child_text(element, "ETag") or ""),
            backend_number(_child_text(element, "Size"), "part size"),
        )
        for element in root
        if local_name(element.tag) == "Part"
    ]
    truncated = (_child_text(root, "IsTruncated") or "").strip().lower() == "true"
    if not truncated:
        return PartsPage(parts, None)
    marker = backend_number(_child_text(root, "NextPartNumberMarker"), "part number marker")
    if parts and marker < parts[-1].number:
        raise BackendDocumentError("the part number marker goes backwards")
    return PartsPage(parts, marker)


def rewrite_texts(
    document: bytes,
    replacements: dict[tuple[str, ...], Callable[[str], str]],
    remove: Iterable[tuple[str, ...]] = (),
) -> bytes:
    """``document`` with the text of every element at each path (local names below
    the root, e.g. ``("Part", "Size")``) replaced by ``replace(old text)``, and
    every element at a path in ``remove`` dropped, tags and content."""
    removed = frozenset(remove)
    root, target = _parse_backend(document, replacements, removed)
    edits: list[tuple[int, int, bytes]] = []
    for path, replace in replacements.items():
        elements = _elements_at(root, path)
        ends = target.located.get(path, [])
        if len(elements) != len(ends):
            raise BackendDocumentError("cannot locate the texts to rewrite")
        for element, end in zip(elements, ends, strict=True):
            old = element.text or ""
            try:
                start = text_start(document, old, end)
            except ValueError as error:
                raise BackendDocumentError(str(error)) from None
            edits.append((start, end, escape(replace(old)).encode("utf-8")))
    for path in removed:
        for start, end in zip(
            target.started.get(path, []), target.located.get(path, []), strict=True
        ):
            try:
                edits.append((start, element_end(document, end), b""))
            except ValueError as error:
                raise BackendDocumentError(str(error)) from None
    try:
        return splice(document, edits)
    except ValueError as error:  # a text to replace inside an element to remove
        raise BackendDocumentError(str(error)) from None


def _elements_at(root: ET.Element, path: tuple[str, ...]) -> list[ET.Element]:
    found = [root]
    for name in path:
        found = [child for element in found for child in element if local_name(child.tag) == name]
    return found

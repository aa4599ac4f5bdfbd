"""GetObjectAttributes answers, as S3 would give them for the plaintext object.

The backend describes what it stores: ``ObjectSize`` and each part's ``Size``
are ciphertext lengths, and ``Checksum`` (and each part's checksums) are
digests of ciphertext. For an encrypted object the sizes are replaced by the
plaintext ones and the checksums dropped, as HEAD and GET drop ciphertext
checksum headers: S3 omits ``Checksum`` for objects that have none, so
clients handle its absence. The ETag stays the backend's, as everywhere
(ADR 0006). Every other byte is copied as the backend sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from addons.s3.multipartxml import (
    CHECKSUM_ELEMENTS,
    BackendDocumentError,
    backend_number,
    parse_backend_document,
    rewrite_texts,
)
from addons.s3.xmledit import local_name
from crypto import FormatError
from crypto.sizes import plaintext_length

__all__ = [
    "STORED_BYTES_ATTRIBUTES",
    "AttributesAnswer",
    "plaintext_attributes",
    "read_attributes",
    "without_etag",
]

# The x-amz-object-attributes values whose answers describe the stored bytes.
STORED_BYTES_ATTRIBUTES: Final = frozenset({"ObjectSize", "ObjectParts", "Checksum"})
# S3 documents the first; moto answers with the second.
_ROOTS: Final = frozenset({"GetObjectAttributesResponse", "GetObjectAttributesOutput"})


@dataclass(frozen=True)
class AttributesAnswer:
    """What the gateway needs to know of a GetObjectAttributesResponse."""

    etag: str | None
    describes_stored_bytes: bool  # it has an ObjectSize, parts or a checksum


def read_attributes(document: bytes) -> AttributesAnswer:
    """Raises :class:`BackendDocumentError` unless ``document`` is such an answer."""
    root = parse_backend_document(document)
    if local_name(root.tag) not in _ROOTS:
        raise BackendDocumentError(f"unexpected root element {local_name(root.tag)!r}")
    names = {local_name(child.tag): child for child in root}
    etag = names["ETag"].text or "" if "ETag" in names else None
    return AttributesAnswer(etag, bool(STORED_BYTES_ATTRIBUTES & names.keys()))


def without_etag(document: bytes) -> bytes:
    """``document`` without its ``ETag`` (that the gateway asked for, not the client)."""
    return rewrite_texts(document, {}, remove=[("ETag",)])


def plaintext_attributes(
    document: bytes, object_size: int, chunk_size: int, *, drop_etag: bool = False
) -> bytes:
    """``document`` for an encrypted object of ``object_size`` plaintext bytes.

    Each part's plaintext size follows from its stored size, a part being one
    frame of ``chunk_size`` chunks. ``drop_etag`` also removes the ``ETag``.
    """

    def whole_size(text: str) -> str:
        backend_number(text, "size")  # the backend's text must be a size too
        return str(object_size)

    def part_size(text: str) -> str:
        try:
            return str(plaintext_length(backend_number(text, "part size"), chunk_size))
        except FormatError as error:  # no frame is that long
            raise BackendDocumentError(str(error)) from None

    return rewrite_texts(
        document,
        {
            ("ObjectSize",): whole_size,
            ("ObjectParts", "Part", "Size"): part_size,
        },
        remove=[
            ("Checksum",),
            *(("ObjectParts", "Part", name) for name in CHECKSUM_ELEMENTS),
            *([("ETag",)] if drop_etag else []),
        ],
    )

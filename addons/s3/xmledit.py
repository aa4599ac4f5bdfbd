"""Byte-exact edits of the backend's XML answers.

The gateway rewrites a few texts (sizes, upload ids) and drops a few elements
(checksums of ciphertext) in documents the backend sent, and copies every
other byte as it is: namespace, element order, escaping and whitespace stay
what the backend wrote, so clients parse what S3 would have sent for the
plaintext objects. The parsers note where things lie with expat's
``CurrentByteIndex``; this module turns those offsets into edits.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import escape

__all__ = ["element_end", "local_name", "splice", "text_start"]


def local_name(tag: str) -> str:
    """``tag`` without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


# At an element's end event, expat's CurrentByteIndex is the offset of its end
# tag's "</", or, for an empty-element tag ("<Size/>"), the offset just past it.


def text_start(document: bytes, text: str, end: int) -> int:
    """Where an element's ``text`` starts, given the offset of its end event (``end``).

    ``ValueError`` unless the element has an end tag and the raw bytes before
    it are ``>`` and ``text`` as an XML writer escapes it: entity references or
    CDATA would make the parsed text differ from the bytes, and S3 never writes
    the texts the gateway edits so.
    """
    raw = escape(text).encode("utf-8")
    start = end - len(raw)
    if start < 1 or not document.startswith(b"</", end) or document[start - 1 : end] != b">" + raw:
        raise ValueError(f"cannot locate the text {text!r} in the document")
    return start


def element_end(document: bytes, end: int) -> int:
    """The offset just past an element, given the offset of its end event (``end``)."""
    if not document.startswith(b"</", end):
        return end  # an empty-element tag
    close = document.find(b">", end)
    if close < 0:
        raise ValueError("an end tag does not close")
    return close + 1


def splice(document: bytes, edits: Iterable[tuple[int, int, bytes]]) -> bytes:
    """``document`` with each ``(start, end, new bytes)`` span replaced.

    The spans must not overlap; ``document`` itself is returned without edits.
    """
    ordered = sorted(edits)
    if not ordered:
        return document
    pieces: list[bytes] = []
    position = 0
    for start, end, new in ordered:
        if start < position:
            raise ValueError("overlapping edits")
        pieces += (document[position:start], new)
        position = end
    pieces.append(document[position:])
    return b"".join(pieces)

"""A mitmweb content view that shows a stored S3G1 object decrypted.

For an operator debugging with the keys: a message whose body is a whole
S3G1 ciphertext object, with its envelope in the ``x-amz-meta-s3gw`` header of
the same message, is shown as its plaintext, under a line with the envelope's
facts. Such messages are a small PutObject as the gateway forwards it (its
request after our ``request`` hook), or a GetObject answer in a plain
mitmproxy in front of the backend. Bodies the gateway streamed are not kept,
so there is nothing to show for them (the flow comment says so).

The view is never chosen automatically (its priority is negative): plaintext
appears only when someone picks the view, not in ``mitmdump``'s flow output.

mitmproxy 12 replaced the content view API (``Contentview`` with
``prettify(data, metadata)``) of mitmproxy 11 (``View`` with
``__call__(data, **metadata)``); :class:`DecryptedView` registers the one the
running mitmproxy has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from mitmproxy import contentviews, http
from mitmproxy.utils import strutils

from addons.bodycrypto import ENVELOPE_HEADER
from addons.config import Config
from crypto import (
    HEADER_LENGTH,
    CryptoError,
    Envelope,
    FrameHeader,
    Keyring,
    KeyUnwrapError,
    ObjectDecryptor,
    UnknownKeyId,
)

VIEW_NAME = "S3 gateway: decrypted"
# The registry functions: their signatures differ between mitmproxy 11 and 12.
_registry: Any = contentviews
# Below zero: a view mitmproxy never picks by itself for "auto".
_NEVER_AUTO = -1.0


def decrypted_text(data: bytes, headers: http.Headers | None, keyring: Keyring | None) -> str:
    """The view's text: a facts line, then the plaintext (text if UTF-8, else hex)."""
    value = headers.get(ENVELOPE_HEADER) if headers is not None else None
    if not value:
        return f"no S3G1 envelope ({ENVELOPE_HEADER}) on this message"
    if keyring is None:
        return "the gateway's configuration is not loaded"
    if not data:
        return "no body kept (bodies streamed through the gateway are not; see the flow comment)"
    try:
        envelope = Envelope.decode(value)
    except CryptoError as error:
        return f"unreadable S3G1 envelope: {error}"
    try:
        data_key = envelope.open(keyring)
    except (UnknownKeyId, KeyUnwrapError) as error:
        return f"the keyring cannot open this object's data key (key id {envelope.key_id}): {error}"
    try:
        with data_key:
            decryptor = ObjectDecryptor(
                data_key, expected_frame=envelope.frame, multipart=envelope.multipart
            )
        try:
            # Nothing is shown unless the whole body authenticates.
            plaintext = b"".join([*decryptor.update(data), *decryptor.finalize()])
        finally:
            decryptor.close()
    except CryptoError as error:
        return (
            f"the body does not decrypt as this object (key id {envelope.key_id}):"
            f" {type(error).__name__}: {error}"
        )
    frames, chunks = _frame_counts(data)
    facts = (
        f"S3G1 key id: {envelope.key_id}  algorithm: {envelope.algorithm.label}"
        f"  chunk size: {envelope.chunk_size}"
        f"  frames: {frames}{' (multipart)' if envelope.multipart else ''}  chunks: {chunks}"
        f"  plaintext: {len(plaintext)} B  ciphertext: {len(data)} B"
    )
    return facts + "\n\n" + _show(plaintext)


def _frame_counts(data: bytes) -> tuple[int, int]:
    """Frames and chunks of an authenticated body, from its frame headers."""
    frames = chunks = offset = 0
    while offset < len(data):
        header = FrameHeader.parse(data[offset : offset + HEADER_LENGTH])
        frames += 1
        chunks += header.chunk_count
        offset += header.ciphertext_length
    return frames, chunks


def _show(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return "\n".join(
            f"{offset} {hexes} {text}" for offset, hexes, text in strutils.hexdump(plaintext)
        )


class _Contentview:
    """The mitmproxy 12 ``Contentview`` protocol."""

    name = VIEW_NAME
    syntax_highlight: Literal["none"] = "none"

    def __init__(self, config: Config) -> None:
        self._config = config

    def prettify(self, data: bytes, metadata: Any) -> str:
        message = getattr(metadata, "http_message", None)
        return _render(self._config, data, message)

    def render_priority(self, data: bytes, metadata: Any) -> float:
        return _NEVER_AUTO

    def __lt__(self, other: Any) -> bool:
        return bool(self.name < other.name)


def _legacy_view(config: Config) -> Any:
    """The view for mitmproxy 11's ``View`` API (defined only there: 12 deprecates it)."""

    from mitmproxy.contentviews.base import View

    class LegacyView(View):
        name = VIEW_NAME

        def __call__(
            self,
            data: bytes,
            *,
            content_type: str | None = None,
            flow: Any = None,
            http_message: http.Message | None = None,
            **unknown_metadata: Any,
        ) -> tuple[str, Iterator[list[tuple[str, str | bytes]]]]:
            text = _render(config, data, http_message)
            return VIEW_NAME, iter([[("text", line)] for line in text.split("\n")])

        def render_priority(self, data: bytes, **metadata: Any) -> float:
            return _NEVER_AUTO

    return LegacyView()


def _render(config: Config, data: bytes, message: http.Message | None) -> str:
    keyring = config.current().keyring if config.ready else None
    return decrypted_text(data, message.headers if message is not None else None, keyring)


class DecryptedView:
    """Registers the decrypting content view with mitmproxy, with the current keyring."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._legacy: Any = None

    def load(self, loader: Any) -> None:
        if hasattr(contentviews, "Contentview"):
            # mitmproxy 12 has no removal; registering again replaces the view by name.
            _registry.add(_Contentview(self._config))
        else:
            self._legacy = _legacy_view(self._config)
            _registry.add(self._legacy)

    def done(self) -> None:
        if self._legacy is not None:
            _registry.remove(self._legacy)  # mitmproxy 11 refuses duplicate names
            self._legacy = None


# ``mitmweb -s addons/decryptview.py --set gw_config=gateway.yaml``: the view on
# its own, e.g. in a plain mitmweb in front of the storage (not the gateway).
_config = Config()
addons = [_config, DecryptedView(_config)]

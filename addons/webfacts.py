"""The S3 facts of each flow as its comment, for debugging in mitmweb.

For every S3 request the comment names the operation, bucket and key and, for
object bodies, the encryption facts: the key id that wraps the data key, the
algorithm, chunk size, frames and chunks, and the plaintext and ciphertext
sizes. A body that streamed through the gateway is not kept (mitmweb shows
it as empty); the comment says so. Object keys are left out when
``observability.redact_object_keys`` is set.

The envelope of a download travels in the backend's response headers, which
the decrypting addon removes: :class:`EnvelopeSeen` keeps it, and must come
before that addon in the chain; :class:`FlowFacts` comes last, with the
observers, so that it sees the flow as the other addons left it.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from addons.bodycrypto import ENVELOPE_HEADER
from addons.config import Config
from addons.flowstate import FlowState, state_of
from addons.multipartreads import stored_part_count
from addons.observe import crypto_stats
from crypto import CryptoError, Envelope

_ENVELOPE_KEY = "s3gw.envelope"


def describe(flow: http.HTTPFlow, state: FlowState, chunk_size: int, redact_keys: bool) -> str:
    operation = state.operation
    lines = [f"S3 {operation.name}"]
    if operation.bucket:
        lines[0] += f"  bucket={operation.bucket}"
    if operation.key:
        lines[0] += f"  key={'<redacted>' if redact_keys else operation.key}"
    if state.error is not None:
        lines.append(f"refused: {state.error.code}")
    value = flow.metadata.get(_ENVELOPE_KEY) or flow.request.headers.get(ENVELOPE_HEADER)
    envelope = None
    if value:
        try:
            envelope = Envelope.decode(value)
        except CryptoError:
            lines.append("envelope: unreadable")
    if envelope is not None:
        frames = "1" if envelope.frame is not None else "?"
        if envelope.multipart and flow.response is not None:
            frames = str(stored_part_count(flow.response.headers) or "?")
        lines.append(
            f"encryption: {state.encryption or 's3g1'}  key id: {envelope.key_id}"
            f"  algorithm: {envelope.algorithm.label}  chunk size: {envelope.chunk_size}"
            f"  frames: {frames}{' (multipart)' if envelope.multipart else ''}"
        )
        chunk_size = envelope.chunk_size
    elif state.encryption == "none":
        lines.append("encryption: none (stored before the gateway)")
    stats = crypto_stats(flow, state, chunk_size)
    if stats is not None:
        lines.append(
            f"{stats.direction}: plaintext {stats.plaintext_bytes} B,"
            f" ciphertext {stats.ciphertext_bytes} B, {stats.chunks} chunks"
            + (f", failed: {stats.error}" if stats.error else "")
        )
    streamed = [
        name
        for name, message in (("request", flow.request), ("response", flow.response))
        if message is not None and message.stream
    ]
    if streamed:
        lines.append(f"{' and '.join(streamed)} body streamed through, not kept")
    return "\n".join(lines)


class EnvelopeSeen:
    """Keeps the envelope the backend sent with an object, for :class:`FlowFacts`."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and ENVELOPE_HEADER in flow.response.headers:
            flow.metadata[_ENVELOPE_KEY] = flow.response.headers[ENVELOPE_HEADER]


class FlowFacts:
    """Writes :func:`describe` into each S3 flow's comment."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._flows_kept = True

    def running(self) -> None:
        # A comment is only ever seen where flows are kept: the flow view of
        # mitmweb or the console, or mitmdump's flow file. Under `run` (mitmdump
        # without `save`, ADR 0009) nothing keeps them, so no comment is written.
        addons = ctx.master.addons
        save = addons.get("save")
        self._flows_kept = addons.get("view") is not None or (
            save is not None and save in addons.chain
        )

    def response(self, flow: http.HTTPFlow) -> None:
        self._comment(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._comment(flow)

    def _comment(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is None or not self._flows_kept or not self._config.ready:
            return
        settings = self._config.current()
        flow.comment = describe(
            flow, state, settings.chunk_size, settings.observability.redact_object_keys
        )

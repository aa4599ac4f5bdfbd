"""Shows plaintext sizes, and no ciphertext checksums, in GetObjectAttributes answers.

The backend's answer describes the stored ciphertext. When it holds an
``ObjectSize``, parts or a checksum, one HEAD of the same object version tells
whether the object is encrypted, its plaintext size and its chunk size; the
answer is then rewritten (``addons.s3.attributesxml``). The HEAD is tied to the
answer by the ETag: if the client did not ask for the ETag the gateway asks
for it too and removes it again, and an ETag that differs means the object
was replaced in between (``InternalError``, which clients retry). Objects
stored before the gateway, and ``passthrough`` buckets, are answered as the
backend answers (ADR 0007). A backend that does not know the operation and
sends the object instead (rclone's ``serve s3``) gets ``BadGateway``: that is
no attributes document, and it is never buffered.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.backend import OBJECT_CHANGED
from addons.config import Config
from addons.failsafe import fail_closed, fail_closed_response
from addons.flowstate import FlowState, buffer_answer_up_to, error_body_response, state_of
from addons.multipartreads import object_path
from addons.objectcrypto import stored_shape
from addons.s3.attributesxml import (
    STORED_BYTES_ATTRIBUTES,
    plaintext_attributes,
    read_attributes,
    without_etag,
)
from addons.s3.errors import BAD_GATEWAY, S3Error
from addons.s3.multipartxml import MAX_BACKEND_DOCUMENT, BackendDocumentError, normalized_etag
from addons.s3.ops import Action
from addons.settings import BucketPolicy

log = logging.getLogger("s3gw")

_ATTRIBUTES_HEADER = "x-amz-object-attributes"
# Set on flows whose request the gateway made ask for the ETag as well.
_ETAG_ADDED = "s3gw.attributes-etag-added"


def _attributes_state(flow: http.HTTPFlow) -> FlowState | None:
    state = state_of(flow)
    if state is None or state.error is not None:
        return None
    if state.operation.action is not Action.ATTRIBUTES:
        return None
    return None if state.policy is BucketPolicy.PASSTHROUGH else state


def _answered(flow: http.HTTPFlow) -> FlowState | None:
    """The state of a successful GetObjectAttributes answer that may need rewriting."""
    state = _attributes_state(flow)
    if state is None or flow.response is None or flow.response.status_code != 200:
        return None
    return state


def _log_unusable(state: FlowState, reason: str) -> None:
    log.error(
        "s3gw: unusable GetObjectAttributes answer for %s: %s", state.operation.resource, reason
    )


class ObjectAttributesTranslation:
    def __init__(self, config: Config) -> None:
        self._config = config

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if _attributes_state(flow) is None:
            return
        headers = flow.request.headers
        asked = {name.strip() for name in headers.get(_ATTRIBUTES_HEADER, "").split(",")}
        if asked & STORED_BYTES_ATTRIBUTES and "ETag" not in asked:
            # The ETag ties the answer to the HEAD that says how to translate it.
            headers[_ATTRIBUTES_HEADER] = headers[_ATTRIBUTES_HEADER] + ",ETag"
            flow.metadata[_ETAG_ADDED] = True

    @fail_closed_response
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = _answered(flow)
        # No attributes document is that large: a backend that ignores ?attributes
        # sends the object itself, which must not be buffered.
        if state is not None and not buffer_answer_up_to(
            flow, MAX_BACKEND_DOCUMENT, S3Error(BAD_GATEWAY)
        ):
            _log_unusable(state, "too large for an attributes document")

    @fail_closed_response
    async def response(self, flow: http.HTTPFlow) -> None:
        state = _answered(flow)
        response = flow.response
        if state is None or response is None or response.raw_content is None:
            return
        try:
            response.content = await self._translated(flow, response.get_content() or b"")
        except BackendDocumentError as error:
            _log_unusable(state, str(error))
            response.content = error_body_response(flow, S3Error(BAD_GATEWAY))
        except S3Error as error:
            response.content = error_body_response(flow, error)

    async def _translated(self, flow: http.HTTPFlow, document: bytes) -> bytes:
        answer = read_attributes(document)
        added = bool(flow.metadata.get(_ETAG_ADDED))
        # Without sizes or checksums (a checksum asked for, none kept) nothing else
        # changes; nor for an object stored unencrypted.
        if answer.describes_stored_bytes:
            assert flow.response is not None
            path = object_path(flow, flow.response.headers.get("x-amz-version-id"))
            shape = await stored_shape(flow, self._config.current(), path)
            if (
                shape is None
                or answer.etag is None
                or shape.etag is None
                or normalized_etag(shape.etag) != normalized_etag(answer.etag)
            ):
                raise S3Error("InternalError", OBJECT_CHANGED)
            if shape.encrypted:
                return plaintext_attributes(document, shape.size, shape.chunk_size, drop_etag=added)
        return without_etag(document) if added else document

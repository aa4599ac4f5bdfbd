"""Shows plaintext object sizes in bucket listings.

ListObjects, ListObjectsV2 and ListObjectVersions answers are buffered (they
are at most a few MiB) and every entry's size is rewritten from the stored
ciphertext length to the plaintext length, computed from the size math with
the configured chunk size rather than a HEAD per key (ADR 0004). ETags pass
through unchanged: the gateway shows the backend's ETag everywhere (ADR 0006).
Listings of ``passthrough`` buckets are not rewritten: their objects are stored
as sent (ADR 0007).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.config import Config
from addons.failsafe import fail_closed_response
from addons.flowstate import FlowState, buffer_answer_up_to, error_body_response, state_of
from addons.s3.errors import BAD_GATEWAY, S3Error
from addons.s3.listxml import MAX_LISTING_BYTES, plaintext_listing
from addons.s3.ops import Action
from addons.settings import BucketPolicy

log = logging.getLogger("s3gw")

# ListMultipartUploads is a listing too, but it reports no object sizes.
_LISTINGS_WITH_SIZES = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions"})


def _listing_state(flow: http.HTTPFlow) -> FlowState | None:
    """The state of a successful listing whose sizes still need rewriting."""
    state = state_of(flow)
    if state is None or state.error is not None or flow.response is None:
        return None
    operation = state.operation
    if operation.action is not Action.LIST or operation.name not in _LISTINGS_WITH_SIZES:
        return None
    if state.policy is BucketPolicy.PASSTHROUGH:
        return None
    return state if flow.response.status_code == 200 else None


def _bad_listing(state: FlowState, reason: str) -> S3Error:
    log.error(
        "s3gw: unusable listing from the backend for %s: %s", state.operation.resource, reason
    )
    return S3Error(BAD_GATEWAY)


class ListingTranslation:
    def __init__(self, config: Config) -> None:
        self._config = config

    @fail_closed_response
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = _listing_state(flow)
        if state is None:
            return
        if not buffer_answer_up_to(flow, MAX_LISTING_BYTES, S3Error(BAD_GATEWAY)):
            _bad_listing(state, "too large to rewrite")

    @fail_closed_response
    def response(self, flow: http.HTTPFlow) -> None:
        state = _listing_state(flow)
        response = flow.response
        if state is None or response is None or response.raw_content is None:
            return
        try:
            # Decodes a Content-Encoding; setting .content encodes it again.
            document = response.get_content()
            assert document is not None
            rewritten = plaintext_listing(document, self._config.current().chunk_size)
        except ValueError as error:  # a ListingError, or an undecodable Content-Encoding
            response.content = error_body_response(flow, _bad_listing(state, str(error)))
            return
        if rewritten is not document:
            # Also updates Content-Length (unless the body is sent chunked).
            response.content = rewritten

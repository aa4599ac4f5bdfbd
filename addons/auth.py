"""Verifies the client's AWS Signature Version 4 before anything is forwarded.

Header and presigned-URL signatures are checked here; the body's signed
SHA-256 or chunk signatures are checked as the body streams (by the object
addon for uploads) or here once a small buffered body is complete.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from mitmproxy import http

from addons.config import Config
from addons.failsafe import fail_closed
from addons.flowstate import active_state, refuse, respond_error
from addons.s3.errors import S3Error
from addons.s3.sigv4 import AuthContext, PayloadMode, verify


def verify_request(request: http.Request, credentials: Mapping[str, str]) -> AuthContext:
    """Verify the SigV4 signature of a request as it arrived; S3Error as AWS answers."""
    raw_path, _, raw_query = request.path.partition("?")
    return verify(
        request.method,
        raw_path,
        raw_query,
        list(request.headers.items(multi=True)),
        datetime.now(UTC),
        credentials.get,
    )


class ClientAuth:
    def __init__(self, config: Config) -> None:
        self._config = config

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None:
            return
        try:
            # The rate limiter may have verified the request already.
            auth = state.auth or verify_request(flow.request, self._config.current().credentials)
            if auth.payload_mode.is_streaming and not state.operation.action.encrypts_body:
                raise S3Error(
                    "InvalidRequest", "aws-chunked bodies are only supported on object uploads."
                )
        except S3Error as error:
            refuse(flow, error)
            return
        state.auth = auth

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        """Check the signed SHA-256 of small, buffered bodies."""
        state = active_state(flow)
        if state is None or flow.request.stream:
            return
        auth: AuthContext | None = state.auth
        if auth is None or auth.payload_mode is not PayloadMode.SIGNED:
            return
        computed = hashlib.sha256(flow.request.raw_content or b"").hexdigest()
        if not hmac.compare_digest(computed, auth.payload_hash.lower()):
            respond_error(
                flow,
                S3Error(
                    "XAmzContentSHA256Mismatch",
                    extra={
                        "ClientComputedContentSHA256": auth.payload_hash,
                        "S3ComputedContentSHA256": computed,
                    },
                ),
            )

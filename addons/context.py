"""Gives every request an id, names its S3 operation and looks up its bucket's policy."""

from __future__ import annotations

from mitmproxy import http

from addons.config import Config
from addons.failsafe import fail_closed
from addons.flowstate import FlowState, attach, new_request_id, state_of
from addons.route import flow_base_domain, passed_through
from addons.s3.ops import classify

REQUEST_ID_HEADER = "x-s3gw-request-id"


class RequestContext:
    def __init__(self, config: Config) -> None:
        self._config = config

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or passed_through(flow):  # health, or not S3
            return
        request = flow.request
        host = request.headers.get("host", request.host)
        settings = self._config.current()
        operation = classify(
            request.method, request.path, request.headers, host, flow_base_domain(flow, settings)
        )
        state = FlowState(new_request_id(), operation)
        if operation.bucket:
            # The one lookup per request: a reload between two hooks cannot split its decision.
            state.policy = settings.bucket_policies.policy_for(operation.bucket)
        state.client_target = request.path
        state.client_headers = http.Headers(request.headers.fields)  # fields: immutable
        length = request.headers.get("content-length", "")
        state.request_length = int(length) if length.isdigit() else None
        attach(flow, state)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and flow.response is not None:
            if state.backend_status is None and state.error is None:
                # Addons answer only with errors; this is the backend's answer, untranslated.
                state.backend_status = flow.response.status_code
            self._add_request_id(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        # Responses made by addons skip responseheaders.
        self._add_request_id(flow)

    @staticmethod
    def _add_request_id(flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and flow.response is not None:
            flow.response.headers[REQUEST_ID_HEADER] = state.request_id

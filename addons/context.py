"""Gives every request an id and names its S3 operation."""

from __future__ import annotations

from mitmproxy import http

from addons.config import Config
from addons.flowstate import FlowState, attach, new_request_id, state_of
from addons.s3.ops import classify

REQUEST_ID_HEADER = "x-s3gw-request-id"


class RequestContext:
    def __init__(self, config: Config) -> None:
        self._config = config

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # answered by the health addon
            return
        request = flow.request
        host = request.headers.get("host", request.host)
        operation = classify(
            request.method, request.path, request.headers, host, self._config.current().base_domain
        )
        attach(flow, FlowState(new_request_id(), operation))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and flow.response is not None:
            flow.response.headers[REQUEST_ID_HEADER] = state.request_id

    def response(self, flow: http.HTTPFlow) -> None:
        # Responses made by addons skip responseheaders.
        self.responseheaders(flow)

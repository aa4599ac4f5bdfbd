"""addons/failsafe.py: a hook that raises unexpectedly fails the flow closed."""

from __future__ import annotations

import asyncio

from mitmproxy import http
from mitmproxy.test import tflow

from addons.failsafe import fail_closed, fail_closed_response
from addons.flowstate import FlowState, attach, state_of
from addons.s3.ops import classify


def s3_flow() -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = "GET"
    flow.request.path = "/bucket/key"
    attach(flow, FlowState("0123456789ABCDEF", classify("GET", "/bucket/key", {}, "h")))
    return flow


class Broken:
    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        raise UnicodeEncodeError("ascii", "é", 0, 1, "boom")

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        raise KeyError("boom")

    @fail_closed_response
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        raise IndexError("boom")

    @fail_closed_response
    async def response(self, flow: http.HTTPFlow) -> None:
        raise OverflowError("boom")


class Working:
    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.metadata["seen"] = True


def assert_internal_error(flow: http.HTTPFlow) -> None:
    assert flow.response is not None
    assert flow.response.status_code == 500
    assert b"<Code>InternalError</Code>" in flow.response.content
    assert b"<RequestId>0123456789ABCDEF</RequestId>" in flow.response.content
    assert flow.response.headers["x-amz-request-id"] == "0123456789ABCDEF"


def test_request_hook_failure_answers_internal_error() -> None:
    flow = s3_flow()
    Broken().requestheaders(flow)
    assert_internal_error(flow)


def test_async_request_hook_failure_answers_internal_error() -> None:
    flow = s3_flow()
    asyncio.run(Broken().request(flow))
    assert_internal_error(flow)


def test_request_hook_failure_without_state_still_answers() -> None:
    flow = tflow.tflow()
    Broken().requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 500


def test_response_hook_failure_marks_the_flow_failed() -> None:
    flow = s3_flow()
    Broken().responseheaders(flow)
    state = state_of(flow)
    assert state is not None and state.error is not None and state.aborted
    flow = s3_flow()
    asyncio.run(Broken().response(flow))
    state = state_of(flow)
    assert state is not None and state.error is not None and state.aborted


def test_working_hooks_are_unchanged() -> None:
    flow = s3_flow()
    Working().requestheaders(flow)
    assert flow.metadata["seen"] and flow.response is None
    assert Working.requestheaders.__name__ == "requestheaders"

"""Refuses requests for buckets whose policy is ``refuse`` (``bucket_policies``).

Placed after ClientAuth, so an unauthenticated request still gets its own
error and the refusal tells nothing about the bucket to strangers. A copy
whose source is in a refused bucket is refused too: it would read that bucket.
The policy itself is looked up once per request by RequestContext
(``FlowState.policy``); the other policies are applied by the body addons.
"""

from __future__ import annotations

from mitmproxy import http

from addons.config import Config
from addons.flowstate import active_state, refuse
from addons.s3.errors import S3Error
from addons.s3.ops import copy_source_bucket
from addons.settings import BucketPolicy


class BucketPolicyGate:
    def __init__(self, config: Config) -> None:
        self._config = config

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = active_state(flow)
        if state is None:
            return
        refused = state.policy is BucketPolicy.REFUSE
        source = flow.request.headers.get("x-amz-copy-source")
        if not refused and source is not None and state.operation.key:
            policies = self._config.current().bucket_policies
            refused = policies.policy_for(copy_source_bucket(source)) is BucketPolicy.REFUSE
        if refused:
            refuse(flow, S3Error("AccessDenied"))

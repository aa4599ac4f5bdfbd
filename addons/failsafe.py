"""Fail closed when an addon hook raises something unexpected.

mitmproxy logs an exception escaping from a hook ("Addon error") and then
carries on with the flow as if nothing happened: a request whose signature
check crashed would be re-signed and forwarded, an upload whose encryption
setup crashed would reach the backend in plaintext. The hooks that decide
whether and how a request is forwarded, or how a response body is
translated, are wrapped with these decorators instead:

- request side (``fail_closed``): the flow is answered with S3's
  ``InternalError`` (or, for a large upload, its connections are closed), so
  nothing is forwarded;
- response side (``fail_closed_response``): both connections are closed, so
  the client sees a cut transfer, never an untranslated (ciphertext) body
  presented as the object.

Both decorators take sync and async hooks. The exception is logged with its
traceback (code locations only, no local values) under the request id.
Expected refusals are ``S3Error`` and are handled by the hooks themselves;
reaching this module is always a bug.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from mitmproxy import http

from addons.flowstate import abort_connections, refuse, state_of
from addons.s3.errors import S3Error

log = logging.getLogger("s3gw")

# A hook method: (addon, flow) -> None, or an awaitable of None.
_Hook = TypeVar("_Hook", bound=Callable[..., Any])


def _log_failure(hook: Callable[..., object], flow: http.HTTPFlow) -> None:
    state = state_of(flow)
    request_id = state.request_id if state is not None else "-"
    # The path without its query: a presigned URL's query is not for the logs.
    log.exception(
        "s3gw: %s failed on %s %s (request %s); failing closed",
        getattr(hook, "__qualname__", "hook"),
        flow.request.method,
        flow.request.path.split("?", 1)[0],
        request_id,
    )


def _refuse_request(flow: http.HTTPFlow) -> None:
    if flow.response is not None and flow.response.status_code >= 400:
        return  # the hook already answered with an error before it failed
    refuse(flow, S3Error("InternalError"))


def _cut_response(flow: http.HTTPFlow) -> None:
    state = state_of(flow)
    if state is not None and state.error is None:
        state.error = S3Error("InternalError")
    abort_connections(flow)


def _guarded(hook: _Hook, on_failure: Callable[[http.HTTPFlow], None]) -> _Hook:
    """``hook`` (sync or async, as mitmproxy must still see it) with ``on_failure``
    called after an unexpected exception."""
    if inspect.iscoroutinefunction(hook):

        async def guarded_async(addon: object, flow: http.HTTPFlow) -> None:
            try:
                await hook(addon, flow)
            except Exception:
                _log_failure(hook, flow)
                on_failure(flow)

        return cast(_Hook, functools.wraps(hook)(guarded_async))

    def guarded(addon: object, flow: http.HTTPFlow) -> None:
        try:
            hook(addon, flow)
        except Exception:
            _log_failure(hook, flow)
            on_failure(flow)

    return cast(_Hook, functools.wraps(hook)(guarded))


def fail_closed(hook: _Hook) -> _Hook:
    """A request hook (``requestheaders``, ``request``, sync or async) that never lets a
    flow through after an unexpected exception."""
    return _guarded(hook, _refuse_request)


def fail_closed_response(hook: _Hook) -> _Hook:
    """A response hook (sync or async) that cuts both connections after an unexpected
    exception."""
    return _guarded(hook, _cut_response)

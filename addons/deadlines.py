"""Connect and read deadlines on proxied requests (``backend.connect_timeout``,
``backend.read_timeout``).

mitmproxy has neither: its TCP connect waits as long as the kernel does
(about two minutes of SYN retries), and its only timer is an idle timeout on
the whole client connection (``tcp_timeout``, 600 s). This addon watches each
flow it forwards and closes the backend connection when

- the TCP connection is not up within ``connect_timeout``;
- the backend sends nothing for ``read_timeout`` while the gateway waits for
  its response headers, or while it streams or buffers a response body. It is
  an idle limit, not a total one: a large, slow transfer that keeps moving is
  never cut, and neither is one that waits for a slow client to read;
- the backend takes none of an upload's bytes for ``read_timeout``.

Closing the backend connection before anything reached the client makes
mitmproxy fail the flow, and ``Limits`` answers the client with S3's
``ServiceUnavailable`` (503, retried by every SDK). Once response headers have
gone out, both connections are closed: the client sees a body shorter than
its ``Content-Length`` (or an unterminated chunked body), never a short body
that looks complete. Proxied requests are not retried here
(docs/adr/0008-retries-and-timeouts.md).

Placed after ``Resign``: its ``responseheaders`` runs after the other addons'
(which may send side requests of their own, bounded by the same settings), so
the body clock starts when the gateway is ready to move the body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks

from addons.config import Config
from addons.flowstate import abort_connections

log = logging.getLogger("s3gw")

_KEY = "s3gw.deadlines"  # flow.metadata: this flow's _Watch
EXPIRED = "s3gw.deadlines.expired"  # flow.metadata: a read deadline closed its backend connection
# The reason a connect cancelled by this addon fails with (mitmproxy keeps it as the
# server connection's error).
CONNECT_TIMEOUT = "backend connect timeout"


@dataclass
class _Watch:
    task: asyncio.Task[None] | None = None
    sent: float | None = None  # time.time() the request was handed to the backend
    answered: float | None = None  # time.time() every responseheaders hook had run


def deadline_expired(flow: http.HTTPFlow) -> bool:
    """Whether this addon closed the flow's backend connection (connect or read deadline)."""
    if flow.metadata.get(EXPIRED):
        return True
    # A cancelled connect fails the flow with the cancellation's message.
    message = flow.error.msg if flow.error is not None else ""
    return CONNECT_TIMEOUT in message or CONNECT_TIMEOUT in (flow.server_conn.error or "")


def _handler(client_id: str) -> Any:
    """mitmproxy's handler of a client connection (its transports and idle clock)."""
    try:
        return ctx.master.addons.get("proxyserver").connections.get(client_id)
    except AttributeError:
        return None


def _buffered(handler: Any, conn: Any) -> int:
    """Bytes written to ``conn`` that its peer has not taken yet."""
    io = handler.transports.get(conn)
    if io is None or io.writer is None:
        return 0
    size: int = io.writer.transport.get_write_buffer_size()
    return size


class Deadlines:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._connects: set[asyncio.Task[None]] = set()  # running connect deadlines

    def _settings(self) -> tuple[float, float]:
        backend = self._config.current().backend
        return backend.connect_timeout, backend.read_timeout

    # ----------------------------------------------------------------- connect

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Not awaited: the hook must return for mitmproxy to start connecting.
        task = asyncio.get_running_loop().create_task(self._connect_deadline(data))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _connect_deadline(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        connect_timeout, _ = self._settings()
        while True:
            await asyncio.sleep(connect_timeout)
            if server.timestamp_tcp_setup is not None or server.error is not None:
                return  # connected, or failed on its own
            handler = _handler(data.client.id)
            io = handler.transports.get(server) if handler is not None else None
            if io is None or io.handler is None or io.writer is not None:
                return  # the client has gone, or the connection is up
            if server.timestamp_start is None:
                continue  # still queued behind mitmproxy's per-host connection limit
            if time.time() - server.timestamp_start < connect_timeout:
                continue
            log.warning(
                "s3gw: no connection to the backend %s within %.1fs",
                server.address,
                connect_timeout,
            )
            # mitmproxy turns the cancelled connect into a failed flow (Limits answers it).
            io.handler.cancel(f"{CONNECT_TIMEOUT} ({connect_timeout:g}s)")
            return

    # ----------------------------------------------------------------- read

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return  # answered by the gateway: the backend is never asked
        watch = flow.metadata[_KEY] = _Watch()
        watch.task = asyncio.get_running_loop().create_task(self._read_deadline(flow, watch))

    def request(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(_KEY)
        if isinstance(watch, _Watch):
            if flow.response is not None:
                self._stop(flow)  # answered in a request hook
            else:
                watch.sent = time.time()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.get(_KEY)
        if isinstance(watch, _Watch):
            watch.answered = time.time()

    def response(self, flow: http.HTTPFlow) -> None:
        self._stop(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._stop(flow)

    def _stop(self, flow: http.HTTPFlow) -> None:
        watch = flow.metadata.pop(_KEY, None)
        if isinstance(watch, _Watch) and watch.task is not None:
            watch.task.cancel()

    async def _read_deadline(self, flow: http.HTTPFlow, watch: _Watch) -> None:
        while True:
            _, read_timeout = self._settings()
            handler = _handler(flow.client_conn.id)
            if handler is None or flow.error is not None or not flow.live:
                return
            since = self._last_progress(flow, watch, handler)
            wait = read_timeout if since is None else since + read_timeout - time.time()
            if wait <= 0:
                self._expire(flow, watch, handler, read_timeout)
                return
            await asyncio.sleep(wait)

    @staticmethod
    def _last_progress(flow: http.HTTPFlow, watch: _Watch, handler: Any) -> float | None:
        """When the backend last moved this flow forward; None while the clock does not run
        (connecting, gateway hooks at work, a slow client)."""
        server = flow.server_conn
        if server.timestamp_tcp_setup is None:
            return None  # the connect deadline's business
        # mitmproxy's own idle clock of the connection: any byte read from either side.
        activity: float = max(handler.timeout_watchdog.last_activity, server.timestamp_tcp_setup)
        if flow.response is None:
            if watch.sent is None:  # uploading: stalled only if the backend takes nothing
                return activity if _buffered(handler, server) else None
            return max(activity, watch.sent)
        if watch.answered is None:
            return None  # the gateway's responseheaders hooks are still running
        if _buffered(handler, handler.client):
            return time.time()  # the client reads slowly: the backend is waiting on it
        return max(activity, watch.answered)

    @staticmethod
    def _expire(flow: http.HTTPFlow, watch: _Watch, handler: Any, read_timeout: float) -> None:
        flow.metadata[EXPIRED] = True
        started = flow.response is not None and bool(flow.response.stream)
        if flow.response is not None:
            where = "within the response body"
        elif watch.sent is None:
            where = "taking none of the upload"
        else:
            where = "before the response headers"
        log.warning(
            "s3gw: backend idle for %.1fs %s of %s %s",
            read_timeout,
            where,
            flow.request.method,
            flow.request.path.split("?", 1)[0],
        )
        if started:
            abort_connections(flow)  # headers are out: the cut is the client's answer
            return
        io = handler.transports.get(flow.server_conn)
        if io is not None and io.writer is not None:
            io.writer.transport.abort()

"""Where a request goes: the configured backend, or the S3 host it names.

In reverse-proxy mode every request goes to ``backend.url``. In the other
modes (``regular``: apps set ``HTTPS_PROXY``; ``transparent``: traffic is
redirected) apps keep their S3 endpoint, and the backend is the host a request
names, if it matches ``forward.allowed_hosts``. The app's signature is
verified with its credentials from ``credentials`` as usual, and the request
is re-signed with the same credentials, for the region the app signed for.

Requests for other hosts are refused (403) or, with ``forward.other_hosts:
pass``, left alone: their TLS connections are not even intercepted, and the
gateway's other addons do not see their plain HTTP requests.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

from mitmproxy import http, tls
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from addons.config import Config
from addons.flowstate import state_of
from addons.s3.errors import S3Error
from addons.settings import Backend, Settings

log = logging.getLogger("s3gw")

_TARGET_KEY = "s3gw.target"
_PASS_KEY = "s3gw.pass"


@dataclass(frozen=True)
class Target:
    """The S3 host a forward-mode request is for."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def is_forward(mode: ProxyMode) -> bool:
    return not isinstance(mode, ReverseMode)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def passed_through(flow: http.HTTPFlow) -> bool:
    """A request for a host that is not S3, forwarded untouched (``other_hosts: pass``)."""
    return bool(flow.metadata.get(_PASS_KEY))


def flow_backend(flow: http.HTTPFlow, settings: Settings) -> Backend:
    """The backend of this flow, with the credentials to sign for it."""
    target = flow.metadata.get(_TARGET_KEY)
    if not isinstance(target, Target):
        return settings.backend
    state = state_of(flow)
    auth = state.auth if state is not None else None
    if auth is None or auth.access_key not in settings.credentials:
        raise S3Error("AccessDenied", "The request is not authenticated.")
    return Backend(
        url=target.url,
        region=auth.region,
        access_key_id=auth.access_key,
        secret_access_key=settings.credentials[auth.access_key],
        ca_bundle=settings.backend.ca_bundle,
    )


class Route:
    """Sets each forward-mode flow's target, or refuses or passes it by host."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if not is_forward(data.context.client.proxy_mode):
            return
        forward = self._config.current().forward
        if forward.other_hosts != "pass":
            return
        host = data.client_hello.sni or (
            data.context.server.address[0] if data.context.server.address else ""
        )
        if not host_allowed(host, forward.allowed_hosts):
            data.ignore_connection = True

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not is_forward(flow.client_conn.proxy_mode) or flow.response is not None:
            return
        forward = self._config.current().forward
        request = flow.request
        if host_allowed(request.host, forward.allowed_hosts):
            flow.metadata[_TARGET_KEY] = Target(request.scheme, request.host, request.port)
        elif forward.other_hosts == "pass":
            flow.metadata[_PASS_KEY] = True
        else:
            log.info("s3gw: refused a request for %s (not in forward.allowed_hosts)", request.host)
            flow.response = http.Response.make(
                403,
                f"{request.host} is not an S3 host this gateway serves\n",
                {"Content-Type": "text/plain"},
            )

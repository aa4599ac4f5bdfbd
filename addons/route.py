"""Where a request goes: the configured backend, or the S3 host it names.

In reverse-proxy mode every request goes to ``backend.url``. In the other
modes (``regular``: apps set ``HTTPS_PROXY``; ``transparent``: traffic is
redirected) apps keep their S3 endpoint, and the backend is the host a request
names, if it matches ``forward.allowed_hosts``. The app's signature is
verified with its credentials from ``credentials`` as usual, and the request
is re-signed with the same credentials, for the region the app signed for.

A host that is ``<bucket>.<entry>``, for an entry of ``forward.allowed_hosts``
without wildcards (``s3.eu-west-1.amazonaws.com``), is virtual-hosted-style
addressing: the bucket is in the host name, not in the path.

Requests for other hosts are refused (403) or, with ``forward.other_hosts:
pass``, left alone: their TLS connections are not even intercepted, and the
gateway's other addons do not see their plain HTTP requests.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, replace
from urllib.parse import unquote

from mitmproxy import http, tls
from mitmproxy.proxy.mode_specs import ProxyMode, RegularMode, ReverseMode

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
    # Virtual-hosted style: the S3 endpoint the host is ``<bucket>.`` of.
    base_domain: str | None = None

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def is_forward(mode: ProxyMode) -> bool:
    return not isinstance(mode, ReverseMode)


def requested_host(flow: http.HTTPFlow) -> str:
    """The host a forward-mode request is for. A proxy client names it (``regular``);
    redirected traffic (``transparent``) is addressed to an IP address, and the Host
    header, which the client's signature covers, names the S3 host."""
    if isinstance(flow.client_conn.proxy_mode, RegularMode):
        return flow.request.host
    return flow.request.pretty_host


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def virtual_host_domain(host: str, patterns: tuple[str, ...]) -> str | None:
    """The endpoint of a ``<bucket>.<endpoint>`` host: the longest entry without
    wildcards it ends with (wildcard entries only allow hosts, they name no endpoint)."""
    host = host.lower().rstrip(".")
    endpoints = {p.lower().rstrip(".") for p in patterns if not any(c in p for c in "*?[")}
    if host in endpoints:
        return None  # the endpoint itself: path-style
    return max((e for e in endpoints if host.endswith("." + e)), key=len, default=None)


def flow_base_domain(flow: http.HTTPFlow, settings: Settings) -> str | None:
    """The domain under which this flow's host names a bucket, if any."""
    target = flow.metadata.get(_TARGET_KEY)
    if isinstance(target, Target) and target.base_domain:
        return target.base_domain
    return settings.base_domain


def passed_through(flow: http.HTTPFlow) -> bool:
    """A request for a host that is not S3, forwarded untouched (``other_hosts: pass``)."""
    return bool(flow.metadata.get(_PASS_KEY))


def side_request_target(flow: http.HTTPFlow, settings: Settings, path: str) -> tuple[Backend, str]:
    """Where to send a side request for ``path`` (``/bucket/key[?query]``, path-style),
    which may name another bucket than the flow: with virtual-hosted-style addressing
    the bucket moves into the host, as not every endpoint serves path-style requests."""
    target = flow.metadata.get(_TARGET_KEY)
    if not isinstance(target, Target) or not target.base_domain:
        return flow_backend(flow, settings), path
    bucket, _, rest = path[1:].partition("/")
    bucket_target = replace(target, host=f"{unquote(bucket)}.{target.base_domain}")
    return _target_backend(flow, settings, bucket_target), "/" + rest


def flow_backend(flow: http.HTTPFlow, settings: Settings) -> Backend:
    """The backend of this flow, with the credentials to sign for it."""
    target = flow.metadata.get(_TARGET_KEY)
    if not isinstance(target, Target):
        return settings.backend
    return _target_backend(flow, settings, target)


def _target_backend(flow: http.HTTPFlow, settings: Settings, target: Target) -> Backend:
    state = state_of(flow)
    auth = state.auth if state is not None else None
    if auth is None or auth.access_key not in settings.credentials:
        raise S3Error("AccessDenied", "The request is not authenticated.")
    # The configured backend's TLS trust, timeouts and retries apply to every host.
    return replace(
        settings.backend,
        url=target.url,
        region=auth.region,
        access_key_id=auth.access_key,
        secret_access_key=settings.credentials[auth.access_key],
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
        host = requested_host(flow)
        if host_allowed(host, forward.allowed_hosts):
            flow.metadata[_TARGET_KEY] = Target(
                request.scheme,
                host,
                request.port,
                virtual_host_domain(host, forward.allowed_hosts),
            )
        elif forward.other_hosts == "pass":
            flow.metadata[_PASS_KEY] = True
        else:
            log.info("s3gw: refused a request for %s (not in forward.allowed_hosts)", host)
            flow.response = http.Response.make(
                403,
                f"{host} is not an S3 host this gateway serves\n",
                {"Content-Type": "text/plain"},
            )

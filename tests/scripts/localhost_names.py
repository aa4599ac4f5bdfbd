"""Test-only mitmproxy script: every name under ``.localhost`` resolves to loopback.

RFC 6761 reserves ``.localhost`` for loopback and systemd's resolver answers it
so, but plain glibc (most CI containers) only knows ``localhost`` itself. The
virtual-hosted-style forward-mode tests name buckets as ``<bucket>.s3.localhost``;
loaded next to the gateway (``-s``), this gives the gateway process, its
connections and its own side requests alike, that resolution.
"""

from __future__ import annotations

import socket
from typing import Any

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
        host = "localhost"
    return _system_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo

"""TLS from the gateway settings, applied as mitmproxy options.

``tls.certificate`` and ``tls.key`` become the certificate mitmproxy presents
to every TLS client (its ``certs`` option, which wants the certificate chain
and the key in one PEM file: the addon writes that file, readable only by the
gateway's user, and removes it on exit). ``backend.ca_bundle`` becomes
``ssl_verify_upstream_trusted_ca``, so the backend's certificate is verified
against it; the gateway's own side requests use the same bundle
(:mod:`addons.backend`). Without these keys mitmproxy's defaults apply: its CA
signs the client-side certificates and the backend is verified against the
system's CAs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from addons.config import Config
from addons.settings import Settings

log = logging.getLogger("s3gw")


def tls_options(settings: Settings, combined_pem: str | None) -> dict[str, Any]:
    """The mitmproxy options for ``settings`` (``combined_pem``: the written cert+key file)."""
    options: dict[str, Any] = {}
    if combined_pem:
        options["certs"] = [f"*={combined_pem}"]
    if settings.backend.ca_bundle:
        options["ssl_verify_upstream_trusted_ca"] = settings.backend.ca_bundle
    return options


class TlsOptions:
    """Keeps mitmproxy's ``certs`` and upstream CA options in line with the settings."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._combined: Path | None = None

    def configure(self, updated: set[str]) -> None:
        if "gw_config" not in updated or not self._config.ready:
            return
        settings = self._config.current()
        combined = self._write_combined(settings) if settings.tls.certificate else None
        options = tls_options(settings, str(combined) if combined else None)
        if combined is None:
            self._remove()
        if options:
            ctx.options.update(**options)
            log.info("s3gw: TLS options %s", ", ".join(sorted(options)))

    def done(self) -> None:
        self._remove()

    def _write_combined(self, settings: Settings) -> Path:
        try:
            pem = Path(settings.tls.certificate).read_bytes()
            if settings.tls.key:
                pem = pem.rstrip(b"\n") + b"\n" + Path(settings.tls.key).read_bytes()
        except OSError as error:
            raise exceptions.OptionsError(f"gateway configuration: tls: {error}") from None
        fd, name = tempfile.mkstemp(prefix="s3gw-tls-", suffix=".pem")  # mode 0600
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        self._remove()
        self._combined = Path(name)
        return self._combined

    def _remove(self) -> None:
        if self._combined is not None:
            with contextlib.suppress(OSError):
                self._combined.unlink()
            self._combined = None

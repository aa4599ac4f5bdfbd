"""Loads the gateway settings (YAML file plus environment overrides)."""

from __future__ import annotations

import logging
import os
from typing import Optional

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from addons.settings import CONFIG_ENV, Settings, SettingsError, load_settings

log = logging.getLogger("s3gw")


class Config:
    """Owns the current :class:`Settings`; the other addons read them from here."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_config",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 - mitmproxy checks typing.Optional
            None,
            f"Path to the gateway's YAML configuration (default: ${CONFIG_ENV}).",
        )

    def configure(self, updated: set[str]) -> None:
        if not ctx.options.keep_host_header:
            # Clients sign the Host header they sent; verification needs it intact.
            ctx.options.keep_host_header = True
        if ctx.options.connection_strategy != "lazy":
            # Connect to the backend only for requests that need it: health probes
            # and refused requests must not depend on (or load) the storage.
            ctx.options.connection_strategy = "lazy"
        if "gw_config" not in updated:
            return
        path = ctx.options.gw_config or os.environ.get(CONFIG_ENV)
        try:
            self._settings = load_settings(path)
        except SettingsError as error:
            raise exceptions.OptionsError(f"gateway configuration: {error}") from None
        log.info("s3gw: forwarding to %s", self._settings.backend.url)

    @property
    def ready(self) -> bool:
        return self._settings is not None

    def current(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("gateway settings are not loaded")
        return self._settings

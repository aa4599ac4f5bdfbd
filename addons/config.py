"""Loads the gateway settings (YAML file plus environment overrides) and reloads them.

A reload (``SIGHUP``, or the file's modification time changing) reads the file
and the environment again. It is applied only if the result is valid and every
change is one ``addons/settings_schema.py`` marks as hot-reloadable; otherwise
the whole reload is refused, with the reason logged, and the running settings
stay. :class:`Settings` objects are immutable and swapped whole, so a request
in progress keeps working with whatever it has already read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Optional

from mitmproxy import ctx, exceptions, hooks
from mitmproxy.addonmanager import Loader

from addons.settings import CONFIG_ENV, LoadedConfig, Settings, SettingsError, load_config
from addons.settings_schema import changes

log = logging.getLogger("s3gw")

DEFAULT_POLL_SECONDS = 2.0

FileStamp = tuple[int, int, int]


def _stamp(path: str | None) -> FileStamp | None:
    """What changes when the file is rewritten or (Kubernetes) its symlink is swapped."""
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class Config:
    """Owns the current :class:`Settings`; the other addons read them from here.

    After a reload that changes settings under ``observability``, the addons get
    a ``configure`` call with ``gw_config`` in ``updated``, as at startup, so
    reacting to ``gw_config`` must be safe to repeat.
    """

    def __init__(self) -> None:
        self._loaded: LoadedConfig | None = None
        self._path: str | None = None
        self._stamp: FileStamp | None = None
        self._notifying = False
        self._watcher: asyncio.Task[None] | None = None
        self._sighup = False
        self._poll = DEFAULT_POLL_SECONDS

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_config",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 - mitmproxy checks typing.Optional
            None,
            f"Path to the gateway's YAML configuration (default: ${CONFIG_ENV}).",
        )
        loader.add_option(
            "gw_config_poll",
            str,  # mitmproxy parses no float options from the command line
            str(DEFAULT_POLL_SECONDS),
            "Seconds between checks of the configuration file for changes, which reload it "
            "(0: only SIGHUP reloads).",
        )

    def configure(self, updated: set[str]) -> None:
        if not ctx.options.keep_host_header:
            # Clients sign the Host header they sent; verification needs it intact.
            ctx.options.keep_host_header = True
        if ctx.options.connection_strategy != "lazy":
            # Connect to the backend only for requests that need it: health probes
            # and refused requests must not depend on (or load) the storage.
            ctx.options.connection_strategy = "lazy"
        if "gw_config_poll" in updated:
            try:
                self._poll = float(ctx.options.gw_config_poll or 0)
            except ValueError:
                self._poll = -1.0
            if not self._poll >= 0:
                raise exceptions.OptionsError(
                    f"gw_config_poll: {ctx.options.gw_config_poll!r} is not 0 (off) or seconds"
                )
        if "gw_config" not in updated or self._notifying:
            return
        path = ctx.options.gw_config or os.environ.get(CONFIG_ENV)
        stamp = _stamp(path)
        try:
            loaded = load_config(path)
        except SettingsError as error:
            raise exceptions.OptionsError(f"gateway configuration: {error}") from None
        self._loaded, self._path, self._stamp = loaded, path, stamp
        log.info("s3gw: forwarding to %s", loaded.settings.backend.url)

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
                self._sighup = True
        if self._watcher is None:
            self._watcher = loop.create_task(self._watch())

    def done(self) -> None:
        if self._sighup:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            interval = self._poll
            await asyncio.sleep(interval if interval > 0 else DEFAULT_POLL_SECONDS)
            if interval <= 0 or self._path is None:
                continue
            stamp = _stamp(self._path)
            if stamp is not None and stamp != self._stamp:
                self.reload("file changed")

    def reload(self, reason: str = "requested") -> bool:
        """Read the configuration again and apply it if it is valid and safe; see above."""
        if self._loaded is None:
            return False
        self._stamp = _stamp(self._path)  # a refused file is reported once, not every poll
        try:
            loaded = load_config(self._path)
        except SettingsError as error:
            log.error(
                "s3gw: configuration reload (%s) refused, the running configuration stays: %s",
                reason,
                error,
            )
            return False
        found = changes(self._loaded.tree, loaded.tree)
        refused = [change.text for change in found if not change.allowed]
        if refused:
            log.error(
                "s3gw: configuration reload (%s) refused, the running configuration stays: %s",
                reason,
                "; ".join(refused),
            )
            return False
        if not found:
            log.info("s3gw: configuration reload (%s): nothing changed", reason)
            return True
        self._loaded = loaded
        log.info("s3gw: configuration reloaded (%s): %s", reason, "; ".join(c.text for c in found))
        if any(change.path.startswith("observability.") for change in found):
            self._notifying = True
            try:
                ctx.master.addons.trigger(hooks.ConfigureHook({"gw_config"}))
            finally:
                self._notifying = False
        return True

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    def current(self) -> Settings:
        if self._loaded is None:
            raise RuntimeError("gateway settings are not loaded")
        return self._loaded.settings

"""Drops the mitmproxy built-in addons a gateway never uses (option ``gw_lean``).

mitmproxy dispatches every event by awaiting each top-level addon in turn,
whether or not it has a hook for that event, and follows each flow event with
an ``update`` event. With mitmdump's 35 built-ins that dispatch costs more per
small request than the gateway's own work. ``s3-encryption-gateway run`` sets
``gw_lean``; ``mitmdump -s addons/gateway.py`` keeps every built-in, for
debugging with mitmproxy's other features (ADR 0009).

Only addons known to be unused are dropped (interactive tools, replay, flow
saving and editing, DNS mode), so a new mitmproxy built-in stays in place.
The flow printer (``dumper``) is dropped only when ``flow_detail`` is 0, as
``run`` sets it: with a higher one, flows are printed as asked.
Dropping ``save`` also means ``run`` cannot be told to write decrypted flows to
disk. When no addon left has an ``add_log`` hook (deprecated since mitmproxy
9), the handler that turns every log record into such an event is removed too.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, hooks
from mitmproxy.addonmanager import Loader, traverse
from mitmproxy.log import LegacyLogEvents

log = logging.getLogger("s3gw")

UNUSED_BUILTINS = (
    "anticache",
    "anticomp",
    "browser",
    "blocklist",
    "clientplayback",
    "commandhistory",
    "comment",
    "cut",
    "dnsresolver",
    "dumper",
    "export",
    "keepserving",
    "mapremote",
    "maplocal",
    "modifybody",
    "modifyheaders",
    "onboarding",
    "readfilestdin",
    "save",
    "savehar",
    "serverplayback",
    "stickyauth",
    "stickycookie",
    "stripdnshttpsrecords",
    "updatealtsvc",
    "upstreamauth",
)


class DropUnusedBuiltins:
    def __init__(self) -> None:
        self._dropped: list[object] = []
        self._legacy_log: list[logging.Handler] = []

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gw_lean",
            bool,
            False,
            "Remove mitmproxy's built-in addons a gateway never uses, for speed.",
        )

    def running(self) -> None:
        if not ctx.options.gw_lean:
            return
        manager = ctx.master.addons
        # Out of the event chain only: they stay registered, so commands and
        # lookups by name still work. (AddonManager.remove would call their done
        # hooks synchronously, which fails for async ones.)
        unused = set(UNUSED_BUILTINS)
        # flow_detail exists only where the printer is loaded (mitmdump).
        if "flow_detail" in ctx.options and ctx.options.flow_detail > 0:
            unused.discard("dumper")  # asked to print flows (`run` sets flow_detail 0)
        self._dropped = [a for a in manager.chain if _name(a) in unused]
        manager.chain = [a for a in manager.chain if a not in self._dropped]
        log.debug("s3gw: dropped unused mitmproxy addons: %s", [_name(a) for a in self._dropped])
        if not any(hasattr(a, "add_log") for a in traverse(manager.chain)):
            # Every log record, debug ones included, would otherwise wake the event
            # loop and be dispatched to every addon as a deprecated add_log event.
            root = logging.getLogger()
            self._legacy_log = [h for h in root.handlers if isinstance(h, LegacyLogEvents)]
            for handler in self._legacy_log:
                root.removeHandler(handler)

    async def done(self) -> None:
        # They still get the shutdown event, to release what they set up.
        for addon in self._dropped:
            await ctx.master.addons.invoke_addon(addon, hooks.DoneHook())
        for handler in self._legacy_log:
            logging.getLogger().addHandler(handler)


def _name(addon: object) -> str:
    return str(getattr(addon, "name", type(addon).__name__.lower()))

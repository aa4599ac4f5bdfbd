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

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mitmproxy import ctx, hooks
from mitmproxy.addonmanager import Loader, safecall, traverse
from mitmproxy.log import LegacyLogEvents

log = logging.getLogger("s3gw")
# Rare events whose handlers may change the chain: dispatched as mitmproxy does.
_LIFECYCLE = frozenset({"load", "configure", "running", "done"})
Handler = Callable[..., Any]

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
        kept = [a for a in manager.chain if a not in self._dropped]
        # The rest behind one dispatcher (EventDispatcher); they too stay registered.
        manager.chain = [EventDispatcher(kept)]
        # Its handlers are fixed now: stop mitmproxy from reloading a changed script
        # (it checks every second), which would leave the dispatcher the old addons.
        for script in getattr(manager.get("scriptloader"), "addons", []):
            if getattr(script, "reloadtask", None) is not None:
                script.reloadtask.cancel()
                script.reloadtask = None
        log.debug("s3gw: dropped unused mitmproxy addons: %s", [_name(a) for a in self._dropped])
        if not any(hasattr(a, "add_log") for a in traverse(kept)):
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


class EventDispatcher:
    """The event chain as one addon, for ``gw_lean``.

    mitmproxy hands every event to each top-level addon in turn (an awaited call,
    an error guard and a walk through nested addons such as the gateway's
    script, whether or not they handle the event), then does the same again
    with an ``update`` event. For each event the gateway sees per request, this
    dispatcher holds the handlers of ``chain`` in mitmproxy's order, found once,
    and calls just those. A handler's exception is logged and skips the rest of
    its top-level addon, as mitmproxy's own guard does; ``AddonHalt`` and
    ``OptionsError`` propagate. ``load``, ``configure``, ``running`` and
    ``done`` go to each addon of ``chain`` the way mitmproxy sends them.

    The handlers are the ones present when it is built, so under ``gw_lean``
    mitmproxy's reloading of a changed script is switched off (ADR 0009).
    """

    name = "s3gw-event-dispatcher"

    def __init__(self, chain: Sequence[Any]) -> None:
        self.chain = list(chain)  # not ``addons``: mitmproxy must not walk into it
        for name, hook in hooks.all_hooks.items():
            groups = [group for top in self.chain if (group := _handlers(top, name))]
            if not groups:
                continue
            # mitmproxy calls some events from plain functions (configure, when an
            # option changes): those stay plain where every handler is.
            is_async = any(inspect.iscoroutinefunction(f) for group in groups for f in group)
            if name in _LIFECYCLE:
                forward = self._forward_async if is_async else self._forward_sync
                setattr(self, name, forward(hook))
            else:
                setattr(self, name, (_dispatch_async if is_async else _dispatch_sync)(groups))

    def _forward_async(self, hook: type[hooks.Hook]) -> Handler:
        async def forward(*args: Any) -> None:
            event = hook(*args)
            for top in self.chain:
                with safecall():
                    await ctx.master.addons.invoke_addon(top, event)

        return forward

    def _forward_sync(self, hook: type[hooks.Hook]) -> Handler:
        def forward(*args: Any) -> None:
            event = hook(*args)
            for top in self.chain:
                with safecall():
                    ctx.master.addons.invoke_addon_sync(top, event)

        return forward


def _handlers(top: Any, name: str) -> list[Handler]:
    found = (getattr(addon, name, None) for addon in traverse([top]))
    return [handler for handler in found if callable(handler)]


def _dispatch_async(groups: list[list[Handler]]) -> Handler:
    async def dispatch(*args: Any) -> None:
        for group in groups:
            with safecall():
                for handler in group:
                    result = handler(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result

    return dispatch


def _dispatch_sync(groups: list[list[Handler]]) -> Handler:
    def dispatch(*args: Any) -> Awaitable[None] | None:
        for index, group in enumerate(groups):
            with safecall():
                for position, handler in enumerate(group):
                    result = handler(*args)
                    if result is not None and inspect.isawaitable(result):
                        # A plain function that returned an awaitable: the rest
                        # runs after it, in an awaitable mitmproxy will await.
                        return _then(result, group[position + 1 :], groups[index + 1 :], args)
        return None

    return dispatch


async def _then(
    first: Awaitable[Any],
    group_rest: list[Handler],
    later: list[list[Handler]],
    args: tuple[Any, ...],
) -> None:
    done = False
    with safecall():
        await first
        done = True
    # As in mitmproxy: a failed handler skips the rest of its top-level addon.
    await _dispatch_async([group_rest, *later] if done else later)(*args)

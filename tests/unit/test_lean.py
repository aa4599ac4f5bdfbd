"""DropUnusedBuiltins: which built-in addons leave the event chain, and when."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import hooks, http
from mitmproxy.addons import anticache, clientplayback, dumper, proxyauth, save
from mitmproxy.log import LegacyLogEvents
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from addons.lean import DropUnusedBuiltins, EventDispatcher


def _dispatched(tctx: taddons.context) -> list[object]:
    """The addons behind the one dispatcher that gw_lean leaves in the chain."""
    (dispatcher,) = tctx.master.addons.chain
    assert isinstance(dispatcher, EventDispatcher)
    return dispatcher.chain


def test_unused_builtins_leave_the_chain_but_stay_registered() -> None:
    lean = DropUnusedBuiltins()
    unused = [anticache.AntiCache(), save.Save(), clientplayback.ClientPlayback()]
    kept = proxyauth.ProxyAuth()  # forward-proxy deployments may use it
    with taddons.context(lean, *unused, kept) as tctx:
        tctx.configure(lean, gw_lean=True)
        lean.running()
        chain = _dispatched(tctx)
        assert kept in chain and lean in chain
        assert not any(addon in chain for addon in unused)
        # Still found by name: commands and lookups keep working.
        assert tctx.master.addons.get("save") is unused[1]
        # Their shutdown hooks still run, async ones included (ClientPlayback's).
        asyncio.run(lean.done())


def test_nothing_is_dropped_unless_asked() -> None:
    lean = DropUnusedBuiltins()
    unused = anticache.AntiCache()
    with taddons.context(lean, unused) as tctx:
        lean.running()
        assert unused in tctx.master.addons.chain


class _LegacyLogReader:
    """An addon still using the deprecated add_log event."""

    def add_log(self, entry: object) -> None:
        pass


def _legacy_log_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, LegacyLogEvents)]


def test_log_records_stop_becoming_events_when_nothing_reads_them() -> None:
    lean = DropUnusedBuiltins()
    with taddons.context(lean) as tctx:
        installed = _legacy_log_handlers()
        assert installed
        tctx.configure(lean, gw_lean=True)
        lean.running()
        assert not _legacy_log_handlers()
        asyncio.run(lean.done())
        assert _legacy_log_handlers() == installed


def test_log_records_stay_events_for_an_addon_that_reads_them() -> None:
    lean = DropUnusedBuiltins()
    with taddons.context(lean, _LegacyLogReader()) as tctx:
        tctx.configure(lean, gw_lean=True)
        lean.running()
        assert _legacy_log_handlers()


def test_the_flow_printer_stays_when_flows_are_to_be_printed() -> None:
    lean = DropUnusedBuiltins()
    printer = dumper.Dumper()
    with taddons.context(lean, printer) as tctx:
        tctx.configure(lean, gw_lean=True, flow_detail=1)
        lean.running()
        assert printer in _dispatched(tctx)
        tctx.master.addons.chain = _dispatched(tctx)  # as before the first running
        tctx.configure(lean, flow_detail=0)
        lean.running()
        assert printer not in _dispatched(tctx)
        asyncio.run(lean.done())


class _Recorder:
    def __init__(self, label: str, calls: list[str], *, fail: bool = False) -> None:
        self.label, self.calls, self.fail = label, calls, fail

    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.label)
        if self.fail:
            raise RuntimeError(f"{self.label} failed")

    def configure(self, updated: set[str]) -> None:
        self.calls.append(f"configure {self.label}")


class _AsyncRecorder(_Recorder):
    async def request(self, flow: http.HTTPFlow) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.calls.append(self.label)


class _Nest:
    """A top-level addon with nested ones, as mitmproxy's script loader."""

    def __init__(self, *addons: object) -> None:
        self.addons = list(addons)


def test_the_dispatcher_calls_the_handlers_in_mitmproxy_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    first = _Recorder("first", calls)
    failing = _Recorder("failing", calls, fail=True)
    skipped = _Recorder("skipped", calls)  # after the failure, in the same top-level addon
    nested = _AsyncRecorder("nested", calls)
    last = _Recorder("last", calls)
    chain = [first, _Nest(failing, skipped), _Nest(_Nest(nested)), last]
    with taddons.context() as tctx:
        dispatcher = EventDispatcher(chain)
        tctx.master.addons.chain = [dispatcher]
        asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow())))
        assert calls == ["first", "failing", "nested", "last"]
        assert "Addon error: failing failed" in caplog.text
        assert getattr(dispatcher, "response", None) is None  # nobody handles it
        calls.clear()
        # mitmproxy sends configure from plain functions when an option changes.
        tctx.master.addons.trigger(hooks.ConfigureHook({"x"}))
        assert calls == ["configure first", "configure failing", "configure skipped",
                         "configure nested", "configure last"]  # fmt: skip


def test_a_plain_handler_returning_an_awaitable_is_awaited_in_order() -> None:
    calls: list[str] = []

    class Deferring:
        def request(self, flow: http.HTTPFlow) -> object:
            async def later() -> None:
                calls.append("deferred")

            return later()

    class FailingLater:
        def request(self, flow: http.HTTPFlow) -> object:
            async def later() -> None:
                raise RuntimeError("deferred failure")

            return later()

    with taddons.context() as tctx:
        tctx.master.addons.chain = [EventDispatcher([Deferring(), _Recorder("after", calls)])]
        asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow())))
        assert calls == ["deferred", "after"]
        calls.clear()
        # As mitmproxy: the failure skips the rest of its top-level addon only.
        tctx.master.addons.chain = [
            EventDispatcher(
                [_Nest(FailingLater(), _Recorder("skipped", calls)), _Recorder("next", calls)]
            )
        ]
        asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow())))
        assert calls == ["next"]


class _Task:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Script:
    def __init__(self) -> None:
        self.reloadtask: _Task | None = _Task()


class _ScriptLoader:
    name = "scriptloader"

    def __init__(self, *scripts: _Script) -> None:
        self.addons = list(scripts)


def test_scripts_are_no_longer_reloaded_once_dispatched() -> None:
    script = _Script()
    task = script.reloadtask
    lean = DropUnusedBuiltins()
    with taddons.context(lean, _ScriptLoader(script)) as tctx:
        tctx.configure(lean, gw_lean=True)
        lean.running()
        assert task is not None and task.cancelled and script.reloadtask is None
        asyncio.run(lean.done())

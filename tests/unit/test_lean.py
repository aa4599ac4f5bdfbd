"""DropUnusedBuiltins: which built-in addons leave the event chain, and when."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy.addons import anticache, clientplayback, dumper, proxyauth, save
from mitmproxy.log import LegacyLogEvents
from mitmproxy.test import taddons

from addons.lean import DropUnusedBuiltins


def test_unused_builtins_leave_the_chain_but_stay_registered() -> None:
    lean = DropUnusedBuiltins()
    unused = [anticache.AntiCache(), save.Save(), clientplayback.ClientPlayback()]
    kept = proxyauth.ProxyAuth()  # forward-proxy deployments may use it
    with taddons.context(lean, *unused, kept) as tctx:
        tctx.configure(lean, gw_lean=True)
        lean.running()
        chain = tctx.master.addons.chain
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
        assert printer in tctx.master.addons.chain
        tctx.configure(lean, flow_detail=0)
        lean.running()
        assert printer not in tctx.master.addons.chain
        asyncio.run(lean.done())

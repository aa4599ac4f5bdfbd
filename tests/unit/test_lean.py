"""DropUnusedBuiltins: which built-in addons leave the event chain, and when."""

from __future__ import annotations

import asyncio

from mitmproxy.addons import anticache, clientplayback, proxyauth, save
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

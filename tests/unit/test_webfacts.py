"""FlowFacts writes the S3 facts as flow comments only where flows are kept."""

from __future__ import annotations

from pathlib import Path

from mitmproxy.addons import save, view

from addons.webfacts import FlowFacts
from tests.unit.chain import Chain, MemoryS3, gateway_chain, signed


def _put_comment(chain: Chain) -> str:
    flow, _ = chain.send(signed("PUT", "/b/k", b"some bytes"), MemoryS3())
    return flow.comment


def test_facts_are_written_when_mitmweb_keeps_the_flows(tmp_path: Path) -> None:
    with gateway_chain(tmp_path, [FlowFacts]) as chain:
        chain.context.master.addons.add(view.View())
        chain.addons[-1].running()
        comment = _put_comment(chain)
    assert comment.startswith("S3 PutObject  bucket=b  key=k")
    assert "key id: k1" in comment


def test_facts_are_written_when_mitmdump_may_save_the_flows(tmp_path: Path) -> None:
    with gateway_chain(tmp_path, [FlowFacts]) as chain:
        chain.context.master.addons.add(save.Save())
        chain.addons[-1].running()
        assert _put_comment(chain).startswith("S3 PutObject")


def test_no_facts_where_nothing_keeps_the_flows(tmp_path: Path) -> None:
    """As under `run`: mitmdump, with `save` out of the chain (ADR 0009)."""
    with gateway_chain(tmp_path, [FlowFacts]) as chain:
        chain.addons[-1].running()
        assert _put_comment(chain) == ""

"""The decrypting content view, on objects the gateway chain really encrypted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import contentviews, http

from addons.bodycrypto import ENVELOPE_HEADER
from addons.decryptview import VIEW_NAME, DecryptedView, decrypted_text
from crypto import StaticKeyring
from tests.unit.chain import CHUNK, Chain, MemoryS3, gateway_chain, signed

TEXT = "plaintext line\n" * 300  # several chunks
BINARY = bytes(range(256)) * 5


def render(message: http.Message, flow: http.HTTPFlow) -> str:
    """The view's text as mitmweb gets it, through mitmproxy 12's or 11's API."""
    if hasattr(contentviews, "registry"):
        return str(contentviews.prettify_message(message, flow, VIEW_NAME).text)
    _, lines, _ = contentviews.get_message_content_view(VIEW_NAME, message, flow)
    return "\n".join("".join(text for _, text in line) for line in lines)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with gateway_chain(tmp_path, [DecryptedView]) as built:
        yield built
        built.addons[-1].done()


def test_a_forwarded_put_shows_its_plaintext(chain: Chain) -> None:
    flow, _ = chain.send(signed("PUT", "/b/text", TEXT.encode()), MemoryS3())
    ciphertext = flow.request.raw_content or b""
    assert ENVELOPE_HEADER in flow.request.headers and TEXT.encode() not in ciphertext
    text = render(flow.request, flow)
    facts, body = text.split("\n\n", 1)
    assert "S3G1 key id: k1  algorithm: AES-256-GCM" in facts
    chunks = -(-len(TEXT) // CHUNK)
    assert f"chunk size: {CHUNK}  frames: 1  chunks: {chunks}" in facts
    assert f"plaintext: {len(TEXT)} B  ciphertext: {len(ciphertext)} B" in facts
    assert body == TEXT


def test_a_stored_object_in_a_backend_answer_shows_as_hex(chain: Chain) -> None:
    backend = MemoryS3()
    chain.send(signed("PUT", "/b/binary", BINARY), backend)
    stored, meta = backend.objects["/b/binary"]
    answer = http.Response.make(200, stored, meta)  # as a plain mitmproxy would see it
    keyring = chain.addons[0].current().keyring
    text = decrypted_text(stored, answer.headers, keyring)
    assert f"plaintext: {len(BINARY)} B" in text
    assert "0000000000 00 01 02 03" in text


def test_without_the_key_or_with_tampering_nothing_is_shown(chain: Chain) -> None:
    backend = MemoryS3()
    chain.send(signed("PUT", "/b/text", TEXT.encode()), backend)
    stored, meta = backend.objects["/b/text"]
    headers = http.Headers(**{ENVELOPE_HEADER.replace("-", "_"): meta[ENVELOPE_HEADER]})

    other = StaticKeyring({"k1": os.urandom(32)}, "k1")
    text = decrypted_text(stored, headers, other)
    assert text.startswith("the keyring cannot open this object's data key (key id k1)")
    assert "plaintext line" not in text and "\n" not in text

    keyring = chain.addons[0].current().keyring
    tampered = bytearray(stored)
    tampered[-1] ^= 1
    text = decrypted_text(bytes(tampered), headers, keyring)
    assert text.startswith("the body does not decrypt") and "plaintext line" not in text
    assert decrypted_text(stored, http.Headers(), keyring).startswith("no S3G1 envelope")
    assert decrypted_text(b"", headers, keyring).startswith("no body kept")


@pytest.mark.skipif(not hasattr(contentviews, "registry"), reason="mitmproxy 12 registry")
def test_never_chosen_automatically(chain: Chain) -> None:
    flow, _ = chain.send(signed("PUT", "/b/text", TEXT.encode()), MemoryS3())
    assert contentviews.prettify_message(flow.request, flow).view_name != VIEW_NAME

"""Subprotocol negotiation (docs/protocol.md, "Subprotocols"): refusal of an offer the
server cannot speak, the documented default, and ``welcome.subprotocol``."""

from __future__ import annotations

import pytest

from tests.conftest import NodeFactory
from tests.harness import connect, refused, token


@pytest.mark.gen_test(timeout=15)
async def test_unsupported_offer_is_refused_400_naming_the_supported_ones(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    for offer in (["chat"], ["squall.v2.json", "graphql-ws"], ["SQUALL.V1.JSON"]):
        e = await refused(node, token("alice"), subprotocols=offer)
        assert e.status == 400, offer
        assert e.body["error"] == "bad_subprotocol"
        assert e.body["supported"] == ["squall.v1.msgpack", "squall.v1.json"]
        assert offer[0] in e.body["message"] and "squall.v1.json" in e.body["message"]
        assert e.headers["Content-Type"] == "application/json"
    # refused before the token is even looked at: no token, same answer
    e = await refused(node, None, subprotocols=["chat"])
    assert e.status == 400 and e.body["error"] == "bad_subprotocol"
    text = node.node.metrics.render().decode()
    assert 'squall_handshakes_total{status="400"} 4.0' in text


@pytest.mark.gen_test(timeout=15)
async def test_no_offer_gets_the_documented_default_and_welcome_says_so(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    c = await connect(node, token("alice"), subprotocols=[], welcome=False)
    assert c.ws.selected_subprotocol is None
    welcome = await c.expect("welcome")  # decoded as msgpack (binary) by the harness
    assert welcome["subprotocol"] == "squall.v1.msgpack"
    c.close()


@pytest.mark.gen_test(timeout=15)
async def test_first_supported_offer_wins_and_welcome_names_it(nodes: NodeFactory) -> None:
    node = await nodes()
    c = await connect(
        node, token("alice"), subprotocols=["chat", "squall.v1.json"], json_mode=True, welcome=False
    )
    assert c.ws.selected_subprotocol == "squall.v1.json"
    assert (await c.expect("welcome"))["subprotocol"] == "squall.v1.json"
    c.close()
    m = await connect(node, token("bob"), welcome=False)
    assert (await m.expect("welcome"))["subprotocol"] == "squall.v1.msgpack"
    m.close()

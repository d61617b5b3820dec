"""Refusals say what was refused and what to change: in the body and in the log."""

from __future__ import annotations

import logging

import pytest
from tornado.httpclient import AsyncHTTPClient

from core.config import load
from core.refusal import _TOKEN_HINTS, token_refusal
from tests.conftest import NodeFactory
from tests.harness import connect, refused, token
from tests.procs import ROOT


def _refusal_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "squall.refusal" and r.levelno == logging.INFO
    ]


@pytest.mark.gen_test(timeout=15)
async def test_origin_refusal_names_the_origin_and_the_key(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="squall.refusal")
    node = await nodes()
    headers = {"Origin": "http://127.0.0.1:8080", "Host": "localhost:8080"}
    e = await refused(node, token("alice"), headers=headers)
    assert e.status == 403 and e.body["error"] == "origin_not_allowed"
    assert "origin http://127.0.0.1:8080 not in security.allowed_origins" in e.body["message"]
    assert "localhost:8080" in e.body["message"]
    logged = _refusal_records(caplog)
    assert len(logged) == 1
    assert "refused GET /ws" in logged[0] and "403 origin_not_allowed" in logged[0]
    assert e.body["message"] in logged[0]


@pytest.mark.gen_test(timeout=15)
async def test_token_and_api_refusals_are_logged_with_status_code_and_hint(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="squall.refusal")
    node = await nodes()
    e = await refused(node, token("alice", exp=1))
    assert e.status == 401
    assert e.body["message"] == token_refusal("expired")
    assert "POST /auth/refresh" in e.body["message"]
    resp = await AsyncHTTPClient().fetch(node.http + "/api/stats", raise_error=False)
    assert resp.code == 401
    logged = _refusal_records(caplog)
    assert any("401 unauthorized: invalid token: expired" in m for m in logged), logged
    assert any("refused GET /api/stats" in m and " 401 " in m for m in logged), logged


def test_token_refusals_fit_a_close_frame_reason() -> None:
    # after the upgrade (first-frame auth) the message is the close reason: <= 123 bytes
    for reason in [*_TOKEN_HINTS, "something_else"]:
        assert len(token_refusal(reason).encode()) <= 123, reason


@pytest.mark.gen_test(timeout=15)
async def test_readme_snippet_works_from_either_dev_page(nodes: NodeFactory) -> None:
    dev = load(str(ROOT / "conf" / "dev.yaml"), {}, {})
    allowed = list(dev.security.allowed_origins)
    node = await nodes({"security.allowed_origins": allowed})
    # the snippet connects to ws://localhost:8080 from the page the user opened
    for page in ("http://localhost:8080", "http://127.0.0.1:8080"):
        c = await connect(
            node, token("alice"), via="query", headers={"Origin": page, "Host": "localhost:8080"}
        )
        c.close()
    e = await refused(
        node, token("alice"), headers={"Origin": "http://evil.example", "Host": "localhost:8080"}
    )
    assert e.status == 403

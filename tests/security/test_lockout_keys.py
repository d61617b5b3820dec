"""Finding 6 of issue 10: the lockout key is a normalised address, not the raw string.

Behind a trusted proxy, every spelling of one address (IPv6 case and compression,
IPv4-mapped IPv6, ``host:port``, ``[v6]:port``) must land in one lockout bucket, one
IPv6 /64 is one bucket by default, and a proxy that appends ports must not put
every client into the proxy's own bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.netaddr import TrustedProxies, canonical_ip, client_ip, lockout_key
from tests.conftest import NodeFactory
from tests.harness import RunningNode, refused, token
from tests.tokens import SECRET

ROOT = Path(__file__).resolve().parents[2]
PROXIED = {"server.trusted_proxies": ["127.0.0.0/8"], "auth.lockout.failures": 3}


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1:5678", "10.0.0.1"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::FFFF:10.0.0.1", "10.0.0.1"),
        ("[::ffff:10.0.0.1]:80", "10.0.0.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("10.0.0.1:", None),
        ("10.0.0.1:http", None),
        ("[2001:db8::1]x", None),
        ("[2001:db8::1", None),
        ("unknown", None),
        ("10.0.0.256", None),
    ],
)
def test_canonical_ip(written: str, canonical: str | None) -> None:
    assert canonical_ip(written) == canonical


def test_lockout_key_groups_ipv6_by_prefix() -> None:
    assert lockout_key("2001:db8:1:2:aaaa::1", 64) == "2001:db8:1:2::/64"
    assert lockout_key("[2001:db8:1:2:ffff::9]:80", 64) == "2001:db8:1:2::/64"
    assert lockout_key("2001:db8:1:3::1", 64) == "2001:db8:1:3::/64"
    assert lockout_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert lockout_key("2001:db8::1", 128) == "2001:db8::1"
    assert lockout_key("::ffff:10.0.0.1", 64) == "10.0.0.1"
    assert lockout_key("10.0.0.1:9", 64) == "10.0.0.1"
    assert lockout_key("unknown", 64) == "unknown"


def test_client_ip_reads_hops_with_ports() -> None:
    trusted = TrustedProxies(["127.0.0.0/8"])
    assert client_ip("127.0.0.1", "10.0.0.8:1234", trusted) == "10.0.0.8"
    assert client_ip("127.0.0.1", "[2001:db8::5]:1234, 127.0.0.2:80", trusted) == "2001:db8::5"
    assert client_ip("::ffff:127.0.0.1", "10.0.0.8", trusted) == "10.0.0.8"
    # still never believed from an untrusted peer, nor past a malformed hop
    assert client_ip("192.0.2.1", "10.0.0.8", trusted) == "192.0.2.1"
    assert client_ip("127.0.0.1", "10.0.0.1, garbage", trusted) == "127.0.0.1"


async def _fail(node: RunningNode, forwarded: str) -> int:
    return (await refused(node, "garbage", headers={"X-Forwarded-For": forwarded})).status


async def _valid(node: RunningNode, forwarded: str) -> int:
    e = None
    try:
        e = await refused(node, token(), headers={"X-Forwarded-For": forwarded})
    except AssertionError:  # accepted
        return 101
    return e.status


@pytest.mark.gen_test(timeout=30)
async def test_spellings_of_one_ipv4_address_share_a_bucket(nodes: NodeFactory) -> None:
    node = await nodes(PROXIED)
    for spelling in ("10.0.0.7", "::ffff:10.0.0.7", "10.0.0.7:5555"):
        assert await _fail(node, spelling) == 401
    assert await _valid(node, "[::FFFF:10.0.0.7]:1") == 429
    assert await _valid(node, "10.0.0.70") == 101


@pytest.mark.gen_test(timeout=30)
async def test_one_ipv6_slash_64_is_one_bucket(nodes: NodeFactory) -> None:
    node = await nodes(PROXIED)
    for spelling in ("2001:db8:0:1::1", "2001:DB8:0:1:0::2", "[2001:db8:0:1:ffff::3]:443"):
        assert await _fail(node, spelling) == 401
    assert await _valid(node, "2001:db8:0:1:1234:5678:9abc:def0") == 429
    assert await _valid(node, "2001:db8:0:2::1") == 101


@pytest.mark.gen_test(timeout=30)
async def test_ipv6_prefix_is_configurable(nodes: NodeFactory) -> None:
    node = await nodes({**PROXIED, "auth.lockout.ipv6_prefix": 128})
    for spelling in ("2001:db8::1", "2001:0db8::0001", "[2001:db8::1]:9"):
        assert await _fail(node, spelling) == 401
    assert await _valid(node, "2001:db8::2") == 101  # same /64, another bucket at /128
    assert await _valid(node, "2001:db8::1") == 429


@pytest.mark.gen_test(timeout=30)
async def test_a_proxy_appending_ports_does_not_lock_everyone_out(nodes: NodeFactory) -> None:
    node = await nodes(PROXIED)
    for port in (1000, 1001, 1002):
        assert await _fail(node, f"10.0.0.8:{port}") == 401
    assert await _valid(node, "10.0.0.8:2000") == 429
    assert await _valid(node, "10.0.0.9:1000") == 101  # another client of the same proxy
    assert await _valid(node, "[2001:db8::9]:1000") == 101


@pytest.mark.parametrize("value", ["0", "129", "-1"])
def test_bad_ipv6_prefix_exits_2_naming_the_key(value: str) -> None:
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET, "SQUALL_AUTH__LOCKOUT__IPV6_PREFIX": value}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert b"auth.lockout.ipv6_prefix" in out.stderr

"""core.stats.totals: the cluster totals of /api/stats from the nodes' records."""

from __future__ import annotations

from core.stats import totals


def test_totals_sum_counts_and_maps_and_keep_the_worst_rtt() -> None:
    records = [
        {
            "node": "a",
            "ready": True,
            "connections": 3,
            "max_connections": 10,
            "users": 2,
            "rooms": 1,
            "frames_in": 100,
            "frames_out": 250,
            "handshakes": {"101": 3, "401": 1},
            "closes": {"1012": 2},
            "auth_failures": {"expired": 1},
            "backend_rtt_ms": 0.8,
        },
        {
            "node": "b",
            "ready": False,
            "connections": 1,
            "max_connections": 10,
            "users": 1,
            "rooms": 0,
            "frames_in": 5,
            "frames_out": 7,
            "handshakes": {"101": 1},
            "closes": {},
            "auth_failures": {"expired": 2, "malformed": 1},
            "backend_rtt_ms": 4.5,
        },
        {"node": "c", "ready": True, "connections": True, "backend_rtt_ms": None},
    ]
    t = totals(records)
    assert t == {
        "nodes": 3,
        "ready": 2,
        "backend_rtt_ms": 4.5,
        "connections": 4,  # a bool is not a count
        "max_connections": 20,
        "users": 3,
        "rooms": 1,
        "frames_in": 105,
        "frames_out": 257,
        "handshakes": {"101": 4, "401": 1},
        "closes": {"1012": 2},
        "auth_failures": {"expired": 3, "malformed": 1},
    }


def test_totals_of_no_node() -> None:
    t = totals([])
    assert t["nodes"] == 0 and t["connections"] == 0 and t["backend_rtt_ms"] is None
    assert t["handshakes"] == {}

"""A node is SIGKILLed: its users' slots are freed and presence tells the truth.

Two nodes; the victim holds users who joined a room; a watcher on the survivor is in
the same room. After SIGKILL, the victim's memberships expire (``2 x
heartbeat.interval_s``) and the survivor's next refresh reaps them, publishing one
``leave`` per user: the watcher must get every one of them, the presence list must
shrink to the watcher, and a killed user must be admitted again (per-user cap 1).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.conftest import Cluster, report, scaled
from tests.chaos.publisher import connect_member
from tests.chaos.swarm import Refused, Ws
from tests.tokens import good_claims, make_token

USERS = scaled(20, 200)
HB = 0.5
CONFIG = {
    "heartbeat.interval_s": HB,
    "limits.max_connections_per_user": 1,
    "limits.on_new_login": "reject",
}


async def _watch(survivor_port: int, kill: object, users: set[str]) -> dict[str, object]:
    watcher = await connect_member(survivor_port, "watcher", "p")
    await asyncio.get_running_loop().run_in_executor(None, kill)
    killed = time.monotonic()
    left: dict[str, float] = {}
    deadline = killed + 10 * HB + 5
    while set(left) != users and time.monotonic() < deadline:
        f = await watcher.recv(max(0.01, deadline - time.monotonic()))
        if f is None:
            break
        if f.get("t") == "presence" and f["event"] == "leave":
            left.setdefault(f["uid"], time.monotonic() - killed)
    watcher.send({"t": "presence", "id": 7, "room": "p"})
    users_now: list[str] = []
    while True:
        f = await watcher.recv(5)
        assert f is not None
        if f.get("id") == 7:
            users_now = f["users"]
            break
    # a killed user gets its slot back on the survivor
    readmitted: float | None = None
    while time.monotonic() < deadline:
        try:
            ws = await Ws.connect(survivor_port, make_token(good_claims("v0", ttl=600)), 5)
        except Refused as r:
            assert r.status == 429, r.status
            await asyncio.sleep(0.05)
            continue
        readmitted = time.monotonic() - killed
        ws.close()
        break
    watcher.close()
    return {
        "leaves": len(left),
        "duplicate_or_unknown": len(set(left) - users),
        "last_leave_s": round(max(left.values()), 2) if left else None,
        "presence_after": len(users_now),
        "slot_freed_s": round(readmitted, 2) if readmitted is not None else None,
    }


@pytest.mark.timeout(scaled(60, 120))
def test_sigkilled_node_users_leave_and_free_their_slots(cluster: Cluster) -> None:
    cluster.start_redis()
    victim = cluster.node("victim", CONFIG)
    survivor = cluster.node("survivor", CONFIG)
    members = cluster.swarm({"port": victim.port, "mode": "member", "room": "p",
                             "count": USERS, "first": 0, "prefix": "v", "max_s": 60})  # fmt: skip
    assert members.wait_ready(30) == USERS
    users = {f"v{i}" for i in range(USERS)}
    figures = asyncio.run(_watch(survivor.port, victim.kill, users))
    members.kill()
    report("node_sigkill", {"users": USERS, **figures})
    assert figures["leaves"] == USERS
    assert figures["presence_after"] == 1
    bound = 2 * HB + 2 * HB + 1.0  # expiry, one sweep, slack for a loaded machine
    assert figures["last_leave_s"] is not None and figures["last_leave_s"] < bound
    assert figures["slot_freed_s"] is not None and figures["slot_freed_s"] < bound

"""The installed client's own checks, run by the interpreter of a clean venv into which
only the squall-client wheel and its dependencies were installed (test_client_wheel.py).

    python installed_client_check.py WS_URL TOKEN VENV_PREFIX

Standard library and the installed distribution only: no pytest, no server code.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def check_offline(prefix: str) -> None:
    import client
    from client import REFERENCE_BACKOFF, Attempts, Backoff, StatusEvent
    from client.frames import decode_frame, encode_frame

    here = Path(client.__file__).resolve()
    assert str(here).startswith(str(Path(prefix).resolve())), f"not the installed one: {here}"
    assert (here.parent / "py.typed").exists()
    assert client.__version__ == "0.1.0"
    a = Attempts(REFERENCE_BACKOFF, rng=lambda: 0.999999)
    delays = [a.next_delay() for _ in range(11)]
    assert [round(d) for d in delays[:10] if d is not None] == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert delays[10] is None
    r = Attempts(Backoff(base=1, cap=8), rng=lambda: 0.5)
    r.next_delay()
    r.next_delay()
    assert r.restart() == 0.5 and r.attempt == 1
    assert StatusEvent("retry", 2, 1.25, 1006).describe() == "retry 2 in 1.2 s (1006)"
    for enc in ("json", "msgpack"):
        assert decode_frame(encode_frame({"t": "ping", "id": 1}, enc)) == {"t": "ping", "id": 1}  # type: ignore[arg-type]


async def check_live(url: str, token: str) -> None:
    from client import SquallClient, StatusEvent

    events: list[StatusEvent] = []
    async with SquallClient(url, token, on_status=events.append) as c:
        ok = await c.join("packaging")
        seq = await c.publish("packaging", {"from": "wheel"})
        assert seq == ok["seq"] + 1
        stream = c.messages()
        frame = await asyncio.wait_for(anext(stream), 5)
        assert frame["t"] == "msg" and frame["data"] == {"from": "wheel"}
        assert await c.ping() > 0
    assert [e.state for e in events] == ["connecting", "open", "closed"]


def main() -> int:
    url, token, prefix = sys.argv[1:4]
    check_offline(prefix)
    asyncio.run(check_live(url, token))
    print("installed client OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

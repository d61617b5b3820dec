"""Type-checked with mypy --strict against the installed wheel (py.typed): the client's
annotations must reach an application; the ignored line must really be an error."""

from __future__ import annotations

from client import REFERENCE_BACKOFF, SquallClient, StatusEvent


async def app(url: str, token: str) -> int:
    def show(event: StatusEvent) -> None:
        print(event.describe())

    async with SquallClient(url, token, backoff=REFERENCE_BACKOFF, on_status=show) as c:
        seq: int = await c.publish("lobby", {"text": "hi"})
        rtt: float = await c.ping()
        wrong: str = await c.publish("lobby", 1)  # type: ignore[assignment]
        return seq + int(rtt) + len(wrong)

"""What the members of a room received, checked against what was acknowledged."""

from __future__ import annotations

from typing import Any


def _id(data: Any) -> int | None:
    """The publisher's number of a message (``data`` is it, or a dict carrying it)."""
    if isinstance(data, int):
        return data
    if isinstance(data, dict) and isinstance(data.get("i"), int):
        return int(data["i"])
    return None


def audit(acked: set[int], results: list[dict[str, Any]], members: int) -> dict[str, int]:
    """Figures over every member of every swarm result.

    * ``silent_lost``: acknowledged messages a member never received, without any
      ``resync`` frame having told it (must be 0).
    * ``told_lost``: the same for members that did get a ``resync`` (allowed).
    * ``duplicates`` and ``order_violations`` (a ``seq`` not above the previous one
      in the same epoch): both must be 0.
    """
    silent = told = dups = disorder = reporting = resynced = 0
    for res in results:
        for key, msgs in res["msgs"].items():
            reporting += 1
            got = [_id(m[2]) for m in msgs if _id(m[2]) is not None]
            dups += len(got) - len(set(got))
            prev: tuple[str, int] | None = None
            for epoch, seq, _data in msgs:
                if prev is not None and prev[0] == epoch and seq <= prev[1]:
                    disorder += 1
                prev = (epoch, seq)
            missing = len(acked - set(got))
            if res["resyncs"].get(key):
                resynced += 1
                told += missing
            else:
                silent += missing
    silent += (members - reporting) * len(acked)  # a member that got nothing at all
    return {
        "acked": len(acked),
        "members_reporting": reporting,
        "silent_lost": silent,
        "told_lost": told,
        "members_resynced": resynced,
        "duplicates": dups,
        "order_violations": disorder,
    }

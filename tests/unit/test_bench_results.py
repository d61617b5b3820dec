"""bench/results.py: which reports may become committed result files."""

from __future__ import annotations

from typing import Any

from bench.results import SCHEMA, committable, envelope


def _report(**changes: Any) -> dict[str, Any]:
    report = envelope("fanout", "short", "python -m bench.run --short")
    report["machine"].update(git_dirty="no", git_commit="abc1234")
    report.update(changes)
    return report


def test_only_a_named_run_from_a_clean_unchanged_tree_is_committed() -> None:
    assert committable(_report())
    assert not committable(_report(mode="custom"))
    assert not committable(_report(sources_changed=["core/hub.py"]))
    dirty = _report()
    dirty["machine"]["git_dirty"] = "yes"
    assert not committable(dirty)


def test_the_envelope_records_versions_and_no_machine_path() -> None:
    report = envelope("conn", "short", "python -m bench.conn --short")
    assert report["schema"] == SCHEMA
    m = report["machine"]
    for key in ("git_commit", "git_dirty", "python", "cpu_model", "nproc", "cores_usable"):
        assert key in m
    assert {"tornado", "msgpack", "redis", "uvloop"} <= set(m["libs"])
    assert "/" not in "".join(str(v) for v in m.values() if isinstance(v, str))

"""The one place results are written and ``docs/benchmarks.md`` is rewritten from them.

Every runner (``bench.run``, ``bench.conn``, ``bench.fanout_cluster``,
``bench.laggards``) saves its report through :func:`save`, which stamps the common
envelope (``schema``, ``scenario``, ``mode``, ``command``, ``machine``: commit,
clean/dirty tree, Python and library versions, CPU model and cores, no absolute
path) and decides where it goes:

* a named result (``bench/results/<name>.json``, committed) only from a clean tree
  whose sources did not change during the run;
* anything else, a dirty tree or a custom run, to ``bench/results/<name>-custom.json``
  (ignored by git) with a warning, and ``docs/benchmarks.md`` is left alone.

:func:`update_docs` replaces one ``<!-- results:<section> -->`` block of the docs, so
the document's result sections are generated from the saved results.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO, machine_info

__all__ = ["DOCS", "RESULTS", "SCHEMA", "envelope", "save", "update_docs"]

RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
#: version of the common envelope (2: this module; 1: the three earlier layouts)
SCHEMA = 2


def envelope(scenario: str, mode: str, command: str) -> dict[str, Any]:
    """The common head of a report; the runner adds its own fields after it."""
    return {
        "schema": SCHEMA,
        "scenario": scenario,
        "mode": mode,
        "command": command,
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
    }


def committable(report: dict[str, Any]) -> bool:
    """True when ``report`` may become a committed result file."""
    machine = report.get("machine", {})
    return (
        report.get("mode") not in (None, "", "custom")
        and machine.get("git_dirty") == "no"
        and bool(machine.get("git_commit"))
        and not report.get("sources_changed")
    )


def save(name: str, report: dict[str, Any]) -> tuple[Path, bool]:
    """Write ``report``; returns (path, committed?). See the module docstring."""
    report.setdefault("schema", SCHEMA)
    ok = committable(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.json" if ok else f"{name.removesuffix('-custom')}-custom.json")
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if not ok:
        print(
            f"results: {path.relative_to(REPO)} (not a committed result: "
            "custom run, dirty tree or sources changed; docs left alone)",
            file=sys.stderr,
        )
    return path, ok


def update_docs(section: str, body: str) -> None:
    """Replace only the ``<!-- results:section -->`` block (appended when absent).

    The file is re-read right before the write: other runners own other sections.
    """
    begin, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    block = f"{begin}\n{body}{end}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n## Results: {section}\n\n{block}\n"
    DOCS.write_text(text)

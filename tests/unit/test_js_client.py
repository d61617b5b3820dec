"""The browser client's JavaScript tests (tests/js/, ``node --test``), run from pytest.

Node.js is a test dependency (scripts/ensure-browser.sh installs Debian's ``nodejs``
when it is missing), like redis-server.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is required: run scripts/ensure-browser.sh"
    return node


def test_node_test_runner_passes_the_js_suite() -> None:
    done = subprocess.run(
        [_node(), "--test", str(ROOT / "tests" / "js")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout

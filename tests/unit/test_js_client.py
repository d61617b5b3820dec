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


def test_typescript_declarations_check_against_the_example() -> None:
    """``tsc --noEmit`` accepts tests/ts/example.ts against static/squall.d.ts, and its
    ``@ts-expect-error`` lines prove the declarations refuse misuse (not ``any``)."""
    tsc = ROOT / ".node" / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "ensure-browser.sh")], check=True, timeout=600
        )
    done = subprocess.run(
        [_node(), str(tsc), "-p", str(ROOT / "tests" / "ts" / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr

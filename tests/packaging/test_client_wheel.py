"""``pip install ./client``: the wheel builds, installs into a clean venv with only its
dependencies, and works there (its checks, the ``squall-client`` console script
against a real node, ``mypy --strict`` seeing its types).

Offline where possible: the wheel is built with ``--no-build-isolation`` from the dev
venv's setuptools; the clean venv gets packages with ``pip install --no-index`` from
.wheelhouse/, which is filled from the package registry (``pip download``) only
when the pinned tornado/msgpack wheels are not there yet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node_procs import ROOT, ServerProcess
from tests.security import users_file
from tests.tokens import good_claims, make_token

pytestmark = pytest.mark.timeout(180)

WHEELHOUSE = ROOT / ".wheelhouse"


def _pins(*names: str) -> list[str]:
    """``name==version`` of ``names`` as requirements.txt pins them."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[name.lower()] = f"{name}=={version}"
    return [pins[n] for n in names]


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]
    return done  # type: ignore[no-any-return]


def _ok(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = _run(argv, **kw)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"SQUALL_AUTH__USERS_FILE": users_file(tmp_path, {"alice": "alice-password"})}
    server = ServerProcess("wheel", env).start()
    yield server
    server.stop()
    assert server.log_problems() == []


def test_wheel_installs_into_a_clean_venv_and_works(tmp_path: Path, node: ServerProcess) -> None:
    pip = [sys.executable, "-m", "pip"]
    # 1. build the wheel from a copy (a build leaves build/ and *.egg-info behind)
    src = tmp_path / "src"
    shutil.copytree(ROOT / "client", src, ignore=shutil.ignore_patterns("__pycache__", "build"))
    dist = tmp_path / "dist"
    _ok([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    wheels = list(dist.glob("squall_client-0.1.0-py3-none-any.whl"))
    assert len(wheels) == 1

    # 2. a clean venv (no pip of its own: the dev venv's pip installs into it)
    venv = tmp_path / "venv"
    _ok([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    deps = _pins("tornado", "msgpack")
    offline = [*pip, "--python", str(python), "install", "-q", "--no-index"]
    offline += ["--find-links", str(WHEELHOUSE), "--find-links", str(dist)]
    if _run([*offline, "--dry-run", *deps]).returncode != 0:
        _ok([*pip, "download", "-q", "--only-binary=:all:", "-d", str(WHEELHOUSE), *deps])
    _ok([*offline, "squall-client"])
    listed = _ok([*pip, "--python", str(python), "list", "--format=freeze"]).stdout
    installed = sorted(line.split("==")[0].lower() for line in listed.split())
    assert installed == ["msgpack", "squall-client", "tornado"]

    # 3. its checks, in the clean venv, outside the checkout (no stray `client` on the path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    tok = make_token(good_claims("alice"))
    url = f"ws://127.0.0.1:{node.port}/ws"
    check = ROOT / "tests" / "packaging" / "installed_client_check.py"
    done = _ok([str(python), "-I", str(check), url, tok, str(venv)], cwd=tmp_path, env=env)
    assert "installed client OK" in done.stdout

    # 4. the console script
    cli = str(venv / "bin" / "squall-client")
    done = _ok([cli, "--url", url, "--token", tok, "ping"], cwd=tmp_path, env=env)
    assert '"rtt_ms"' in done.stdout
    assert done.stderr.splitlines()[:2] == ["# connecting", "# open"]
    bad = _run(
        [cli, "--url", url, "--username", "alice", "ping"],
        cwd=tmp_path,
        env={**env, "SQUALL_PASSWORD": "wrong"},
    )
    assert bad.returncode == 3, bad.stderr
    assert bad.stderr.strip() == "login failed: HTTP 401 invalid username or password"
    assert _run([cli, "--help"], cwd=tmp_path, env=env).stdout.startswith("usage: squall-client")

    # 5. typed: mypy --strict finds the installed package's annotations (py.typed)
    usage = tmp_path / "typed_usage.py"
    shutil.copy(ROOT / "tests" / "packaging" / "typed_usage.py", usage)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--warn-unused-ignores"]
    done = _run([*mypy, "--python-executable", str(python), str(usage)], cwd=tmp_path, env=env)
    assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr

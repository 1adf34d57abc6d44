"""The suite fails on a skip that tests/conftest.py does not allow: a test that did not run is not a pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_pytest(folder: Path, allow: str | None = None) -> subprocess.CompletedProcess:
    (folder / "test_demo.py").write_text("import pytest\n\ndef test_runs():\n    pass\n\n"
                                         "def test_skips():\n    pytest.skip('no RTSP server here')\n")
    env = {k: v for k, v in os.environ.items() if k != "VIDPARSE_ALLOW_SKIPS"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if allow:
        env["VIDPARSE_ALLOW_SKIPS"] = allow
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(folder), str(folder / "test_demo.py")],
                          capture_output=True, text=True, timeout=120, cwd=folder, env=env)


def test_an_unallowed_skip_fails_the_run(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 skipped test(s) not in ALLOWED_SKIPS" in result.stdout
    assert "test_demo.py::test_skips: Skipped: no RTSP server here" in result.stdout


def test_the_check_can_be_turned_off_for_a_local_run(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, allow="1")
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout

"""Every tutorial runs top to bottom as a plain script and exits 0.

The tutorials (tutorials/*.py, in jupytext's percent format) check themselves with asserts, so
running them is the test. Each one runs in a fresh interpreter (sys.executable) from an empty
temporary directory, so that it cannot depend on the caller's working directory or leave files in
the repository. A new tutorial is picked up automatically. Files whose names start with "_" are
treated as helpers and are not run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted(p for p in (ROOT / "tutorials").glob("*.py") if not p.name.startswith("_"))
TIMEOUT = 300  # seconds per tutorial; each one is meant to take a few seconds
CELL_MARKER = re.compile(r"^# %%", re.MULTILINE)  # a percent-format cell, code or markdown


def tail(text, lines: int = 40) -> str:
    """The last lines of a subprocess's output, where the assert that failed is reported."""
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    return "\n".join(text.splitlines()[-lines:])


def child_env() -> dict:
    """The caller's environment, with the repository root first on PYTHONPATH so that `import
    minigpt` finds this checkout even when the package is not installed (harmless when it is)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["MPLBACKEND"] = "Agg"  # should a tutorial ever plot: never open a window
    return env


def test_there_are_tutorials():
    assert TUTORIALS, f"no tutorials found in {ROOT / 'tutorials'}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_is_percent_format(path):
    text = path.read_text(encoding="utf-8")
    assert CELL_MARKER.search(text), f"{path.name} has no '# %%' cell marker (jupytext percent format)"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    cmd = [sys.executable, str(path)]
    try:
        # check=False: a failing tutorial is reported by the assert below, with its output
        proc = subprocess.run(
            cmd, check=False, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{path.name} did not finish within {TIMEOUT} s\n"
            f"--- stdout (tail) ---\n{tail(e.stdout)}\n--- stderr (tail) ---\n{tail(e.stderr)}"
        )
    assert proc.returncode == 0, (
        f"{path.name} exited with status {proc.returncode}\n"
        f"--- stdout (tail) ---\n{tail(proc.stdout)}\n--- stderr (tail) ---\n{tail(proc.stderr)}"
    )

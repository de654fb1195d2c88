"""Making student copies and grading them.

make: copy the reference package, replace the assignment's solution regions by
`raise NotImplementedError(hint)`, and add the grading tests, a pytest.ini, a README (the task,
the math, the commands) and assignment.json (what was handed out, by which minigpt). The numba
kernels (minigpt/kernels) are left out of every copy, because they are the same computations
written as loops and would give the answers away; the copy's default backend is therefore NumPy,
which is the code the student writes anyway.

grade: lift the student's lines between the markers out of their copy and paste them into a
fresh copy of the reference package, so only the regions are graded (an edited test, helper or
grading file in the student's copy changes nothing). Then run each part's grading file (plus any
hidden tests for that part) with pytest in its own subprocess, with a time limit: a part that
fails, hangs or crashes scores 0 and the grader goes on to the next. The score table shows, per
part, the points, pass or fail and the first failing check with its numbers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..errors import InputError
from . import regions as R
from .assignments import ASSIGNMENTS, Assignment, Part, get_assignment

MANIFEST = "assignment.json"
PACKAGE = Path(__file__).resolve().parent.parent  # the reference package (minigpt/)
GRADERS = Path(__file__).resolve().parent / "graders"
WITHHELD = ("kernels", "course/graders")  # package subdirectories left out of a student copy
DEFAULT_TIMEOUT = 120.0  # seconds per part
BACKEND_DEFAULT_LINE = 'DEFAULT = "numba"'
PYTEST_INI = "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = -p no:cacheprovider\n"


# ----------------------------------------------------------------------------------------------
# the reference package and its copies


def reference_regions(package: Path = PACKAGE) -> dict[str, tuple[str, R.Region]]:
    """{region id: (path such as "minigpt/layers/linear.py", Region)} of the reference package.
    Refuses a package whose regions are stubs (a student copy is not a reference)."""
    found = R.package_regions(package)
    for rid, (rel, region) in found.items():
        body = (package.parent / rel).read_text().splitlines()[region.begin + 1 : region.end]
        code = [line.strip() for line in body if line.strip() and not line.strip().startswith("#")]
        if len(code) == 1 and code[0].startswith("raise NotImplementedError("):
            raise InputError(f"the minigpt package at {package} is a student copy (region {rid!r} in {rel} is a stub); "
                             "make and grade need the reference package")
    return found


def check_regions(a: Assignment, found: dict) -> None:
    missing = [r for r in a.regions if r not in found]
    if missing:
        raise RuntimeError(f"assignment {a.name!r} names regions that the reference code does not mark: "
                           f"{', '.join(missing)}")


def copy_package(dest: Path, package: Path = PACKAGE) -> None:
    """The reference package into dest/minigpt, without the withheld directories and caches; the
    copy's default backend is NumPy (its kernels are withheld)."""
    withheld = {package / w for w in WITHHELD}

    def ignore(directory, names):
        return [n for n in names if n == "__pycache__" or Path(directory) / n in withheld]

    shutil.copytree(package, dest / "minigpt", ignore=ignore)
    backend = dest / "minigpt" / "backend.py"
    text = backend.read_text()
    if text.count(BACKEND_DEFAULT_LINE) != 1:
        raise RuntimeError(f"{backend}: expected the line {BACKEND_DEFAULT_LINE!r} once, to make NumPy the default")
    backend.write_text(text.replace(
        BACKEND_DEFAULT_LINE, 'DEFAULT = "numpy"  # a student copy: the numba kernels are withheld'))


def set_region_bodies(root: Path, found: dict, bodies: dict) -> None:
    """Replace, in the package under root, the bodies of the regions named in bodies (a list of
    lines, or None for the student's stub)."""
    by_file: dict[str, dict] = {}
    for rid, body in bodies.items():
        by_file.setdefault(found[rid][0], {})[rid] = body
    for rel, file_bodies in by_file.items():
        path = root / rel
        path.write_text(R.replace_bodies(path.read_text(), file_bodies, rel))


def pytest_available() -> bool:
    return importlib.util.find_spec("pytest") is not None


def check_pytest() -> None:
    """Grading runs pytest in subprocesses: say so plainly when it is missing."""
    if not pytest_available():
        raise InputError("grading needs pytest, which is not installed: pip install pytest (or minigpt[dev])")


# ----------------------------------------------------------------------------------------------
# hidden tests


def hidden_test_files(a: Assignment, hidden_dir) -> dict[str, list[Path]]:
    """{part name: [hidden test files]} from a directory of test_<part>*.py files."""
    if hidden_dir is None:
        return {}
    d = Path(hidden_dir)
    if not d.is_dir():
        raise InputError(f"--hidden-tests {hidden_dir}: not a directory")
    files = sorted(d.glob("test_*.py"))
    if not files:
        raise InputError(f"--hidden-tests {hidden_dir}: no test_<part>*.py files in it")
    names = sorted((p.name for p in a.parts), key=len, reverse=True)  # longest first: cross_entropy before cross
    out: dict[str, list[Path]] = {}
    for f in files:
        stem = f.stem[len("test_"):]
        part = next((n for n in names if stem == n or stem.startswith(n + "_")), None)
        if part is None:
            raise InputError(f"--hidden-tests: {f.name} names no part of {a.name} (name the file test_<part>.py or "
                             f"test_<part>_<anything>.py with part one of {', '.join(p.name for p in a.parts)})")
        out.setdefault(part, []).append(f)
    return out


# ----------------------------------------------------------------------------------------------
# make


def readme(a: Assignment, found: dict) -> str:
    rows = "\n".join(
        f"| {p.name} | {p.points} | {', '.join(f'`{r}` in `{found[r][0]}`' for r in p.regions)} | "
        f"`tests/{p.tests}` |" for p in a.parts)
    return f"""\
# Assignment {a.number}: {a.title}

A copy of minigpt, the NumPy GPT-2, with the code of this assignment cut out. Write it back.

## The task

{a.task}
## Where to write, and the points

Write between the `# BEGIN SOLUTION <id>` and `# END SOLUTION` lines, in place of the
`raise NotImplementedError(...)`. **Only the lines between the markers are graded**: keep both
marker lines, and put any helper you need inside the region (a nested function is fine).

| part | points | regions | tests |
| --- | --- | --- | --- |
{rows}

A part scores all its points when every test in its file passes, and 0 otherwise.
{a.max_points} points in all. Your instructor may grade with further tests that are not in
this copy: aim for correct code, not only for passing these checks.

## Check your progress

From this directory, in an environment with numpy, safetensors, tqdm and pytest installed
(`pip install numpy safetensors tqdm pytest`):

```bash
pytest                    # every part (before you start, each test fails with NotImplementedError)
pytest tests/{a.parts[0].tests}
pytest -x -q              # stop at the first failure
```

A failing gradient check prints the worst element: its index, your value, the numerical one,
and the relative error. Gradient checks run in float64 and pass below a relative error of 1e-7.

This copy runs on the NumPy backend only: the numba kernels of the full minigpt (the same
computations written as loops) are not included, and `minigpt bench` needs them. The rest is
there to read and to use: once your code works, `python -m minigpt train --max-iters 200` trains
a small model on it.
"""


def make(name: str, out, hidden_tests=None) -> dict:
    """Write a student copy of assignment name into the directory out (absent or empty).
    Hidden tests are checked (their names map to parts, they pass on the reference solution)
    but not copied. Returns the manifest."""
    a = get_assignment(name)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not an empty directory (choose a new one)")
    hidden = hidden_test_files(a, hidden_tests)
    found = reference_regions()
    check_regions(a, found)
    if hidden:
        check_pytest()
        with tempfile.TemporaryDirectory(prefix="minigpt-hidden-check-") as tmp:
            result = grade_workspace(a, build_workspace(a, Path(tmp), found, None), hidden, parts=set(hidden))
        failed = [p for p in result["parts"] if not p["passed"]]
        if failed:
            f = failed[0]
            raise InputError(f"--hidden-tests: part {f['name']} fails on the reference solution: "
                             f"{f['first_failure'] or f['status']}")
    out.mkdir(parents=True, exist_ok=True)
    copy_package(out)
    set_region_bodies(out, found, dict.fromkeys(a.regions))
    (out / "tests").mkdir()
    for p in a.parts:
        shutil.copy2(GRADERS / p.tests, out / "tests" / p.tests)
    (out / "pytest.ini").write_text(PYTEST_INI)
    (out / "README.md").write_text(readme(a, found))
    manifest = {
        "assignment": a.name, "number": a.number, "title": a.title, "minigpt_version": __version__,
        "max_points": a.max_points,
        "parts": [{"name": p.name, "points": p.points, "regions": list(p.regions), "tests": p.tests} for p in a.parts],
        "regions": {r: found[r][0] for r in a.regions},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ----------------------------------------------------------------------------------------------
# grade


def read_manifest(student_dir) -> tuple[Assignment, dict]:
    d = Path(student_dir)
    what = f"{student_dir} is not a student copy made by `minigpt assignment make`"
    if not d.is_dir():
        raise InputError(f"{student_dir}: not a directory")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        name = manifest["assignment"]
    except FileNotFoundError:
        raise InputError(f"{what} (no {MANIFEST})") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{what} ({MANIFEST} is not an assignment manifest)") from None
    if not (d / "minigpt").is_dir():
        raise InputError(f"{what} (no minigpt/ package in it)")
    try:
        return get_assignment(str(name)), manifest
    except InputError:
        raise InputError(f"{what} known to this minigpt ({MANIFEST} names assignment {name!r})") from None


def student_bodies(a: Assignment, student_dir: Path, found: dict) -> dict[str, list[str]]:
    """The student's lines between the markers of each of a's regions. A region that cannot be
    found (file gone, markers deleted or broken) becomes a NotImplementedError saying so."""
    bodies = {}
    for rid in a.regions:
        rel, region = found[rid]
        path = student_dir / rel
        problem = None
        try:
            body = R.region_body(path.read_text(), rid, rel)
            if body is None:
                problem = f"the markers of region {rid} are missing from {rel}"
        except FileNotFoundError:
            problem, body = f"{rel} is missing", None
        except (InputError, UnicodeDecodeError) as e:
            problem, body = f"broken solution markers: {e}", None
        bodies[rid] = body if problem is None else [f"{region.indent}raise NotImplementedError({problem!r})"]
    return bodies


def build_workspace(a: Assignment, root: Path, found: dict, bodies: dict | None) -> Path:
    """A gradable tree under root: the reference package with bodies (None: the reference's own
    solution) in a's regions, and the grading files in tests/."""
    copy_package(root)
    if bodies is not None:
        set_region_bodies(root, found, bodies)
    (root / "tests").mkdir()
    for p in a.parts:
        shutil.copy2(GRADERS / p.tests, root / "tests" / p.tests)
    (root / "pytest.ini").write_text(PYTEST_INI)
    return root


@dataclass
class PartResult:
    name: str
    points: int
    max_points: int
    passed: bool
    status: str  # pass, fail, timeout, crash
    tests_passed: int
    tests_total: int
    first_failure: str | None  # "test name: message"
    seconds: float


def _failure_message(element, root: Path) -> str:
    message = (element.get("message") or "").strip()
    if not message or message == "collection failure":  # the module does not import: say where
        errors = [ln[1:].strip() for ln in (element.text or "").splitlines() if ln.startswith("E ")]
        message = errors[-1] if errors else (message or "error")
        where = re.findall(r'File "([^"]+)", line (\d+)', element.text or "")
        if where:
            path, line = where[-1]
            message += f" ({path.removeprefix(str(root) + os.sep)}, line {line})"
    message = message.splitlines()[0] if message else "error"
    return message.removeprefix("AssertionError: ")  # the checks' own messages say what failed


def run_part(root: Path, part: Part, hidden: list[Path], timeout: float) -> PartResult:
    """One part's grading files (and hidden tests) in a pytest subprocess, on the NumPy backend."""
    xml = root / f".junit-{part.name}.xml"
    files = [str(root / "tests" / part.tests)] + [str(h) for h in hidden]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(root / "pytest.ini"),
           "--rootdir", str(root), f"--junitxml={xml}", *files]
    env = dict(os.environ, PYTHONPATH=str(root), MINIGPT_BACKEND="numpy", PYTHONDONTWRITEBYTECODE="1",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: pytest and anything it started
        output, _ = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - t0
    result = PartResult(part.name, 0, part.points, False, "fail", 0, 0, None, seconds)
    if timed_out:
        result.status, result.first_failure = "timeout", f"timed out after {timeout:g} s (an endless loop?)"
        return result
    # pytest's exit status: 0 all passed, 1 some failed, 2 a collection error (the student's code
    # does not import), 5 no tests; a negative status is a signal (a segfault, an abort)
    cases = ET.parse(xml).getroot().iter("testcase") if xml.exists() else None
    if cases is None or proc.returncode not in (0, 1, 2, 5):
        last = [ln for ln in output.decode(errors="replace").splitlines() if ln.strip()]
        result.status = "crash"
        result.first_failure = f"the test process crashed (exit status {proc.returncode})" + (
            f": {last[-1].strip()}" if last else "")
        return result
    for case in cases:
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if case.find("skipped") is not None and bad is None:
            bad = case.find("skipped")  # a skipped grading test proves nothing: it does not pass
        result.tests_total += 1
        if bad is None:
            result.tests_passed += 1
        elif result.first_failure is None:
            result.first_failure = f"{case.get('name') or 'collection'}: {_failure_message(bad, root)}"
    result.passed = proc.returncode == 0 and result.tests_total > 0 and result.tests_passed == result.tests_total
    if result.tests_total == 0:
        result.first_failure = "no tests ran"
    result.status = "pass" if result.passed else "fail"
    result.points = part.points if result.passed else 0
    return result


def grade_workspace(a: Assignment, root: Path, hidden: dict, timeout: float = DEFAULT_TIMEOUT,
                    jobs: int = 1, parts=None) -> dict:
    """Run the parts (default: all of a's) in root; the score dict."""
    parts = a.parts if parts is None else [p for p in a.parts if p.name in parts]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda p: run_part(root, p, hidden.get(p.name, []), timeout), parts))
    return {
        "assignment": a.name, "number": a.number, "title": a.title,
        "score": sum(r.points for r in results), "max_score": sum(p.points for p in parts),
        "parts": [asdict(r) for r in results],
    }


def grade(student_dir, hidden_tests=None, timeout: float = DEFAULT_TIMEOUT, jobs: int = 1) -> dict:
    """Grade the student copy in student_dir; returns the score as a JSON-ready dict."""
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InputError(f"--timeout must be > 0 seconds, got {timeout}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise InputError(f"--jobs must be an integer >= 1, got {jobs}")
    a, manifest = read_manifest(student_dir)
    check_pytest()
    hidden = hidden_test_files(a, hidden_tests)
    found = reference_regions()
    check_regions(a, found)
    bodies = student_bodies(a, Path(student_dir), found)
    with tempfile.TemporaryDirectory(prefix="minigpt-grade-") as tmp:
        result = grade_workspace(a, build_workspace(a, Path(tmp), found, bodies), hidden, timeout, jobs)
    result["student_dir"] = str(student_dir)
    result["minigpt_version"] = __version__  # the grader's; the copy was made by copy_minigpt_version
    result["copy_minigpt_version"] = manifest.get("minigpt_version")
    result["hidden_tests"] = sorted(f.name for files in hidden.values() for f in files)
    return result


def format_score(result: dict) -> str:
    """The score table for a terminal."""
    lines = [f"assignment {result['number']} {result['assignment']} ({result['title']}): {result['student_dir']}"]
    width = max(len("part"), *(len(p["name"]) for p in result["parts"]))
    lines.append(f"{'part':<{width}}  {'points':>7}  {'result':<7}  {'tests':>5}  first failing check")
    for p in result["parts"]:
        pts = f"{p['points']}/{p['max_points']}"
        tests = f"{p['tests_passed']}/{p['tests_total']}"
        lines.append(f"{p['name']:<{width}}  {pts:>7}  {p['status']:<7}  {tests:>5}  {p['first_failure'] or ''}".rstrip())
    total = f"{result['score']}/{result['max_score']}"
    lines.append(f"{'total':<{width}}  {total:>7}")
    return "\n".join(lines)


def list_assignments() -> dict:
    """Every registered assignment, for `minigpt assignment list`."""
    return {"assignments": [
        {"number": a.number, "name": a.name, "title": a.title, "max_points": a.max_points,
         "parts": [{"name": p.name, "points": p.points, "regions": list(p.regions), "tests": p.tests,
                    "summary": p.summary} for p in a.parts]}
        for a in ASSIGNMENTS.values()]}


def format_list(listing: dict) -> str:
    lines = []
    for a in listing["assignments"]:
        lines.append(f"{a['number']}. {a['name']}: {a['title']} ({a['max_points']} points)")
        for p in a["parts"]:
            lines.append(f"     {p['name']:<14} {p['points']:>3}  {p['summary']}")
            lines.append(f"     {'':<14}      regions {', '.join(p['regions'])}; graded by {p['tests']}")
    return "\n".join(lines)


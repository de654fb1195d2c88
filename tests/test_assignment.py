"""The course kit end to end: student copies made, run with pytest and graded in subprocesses.

For every assignment: the copy imports cleanly and its pytest fails only with NotImplementedError;
the stubs score 0; the reference regions pasted back score full marks; a planted mistake costs
exactly its part's points. Then: hanging and crashing parts score 0 while grading goes on,
hidden tests, the JSON report, and edits outside the regions not counting.

Grading runs pytest once per part, so these tests are the slow ones: they share one student copy
per assignment (module-scoped), grade with two parts at a time and stay on the NumPy backend.
"""

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from minigpt.cli import main
from minigpt.course import ASSIGNMENTS, get_assignment
from minigpt.course import regions as R
from minigpt.course.kit import PACKAGE, format_score, grade, make, reference_regions, set_region_bodies

FOUND = reference_regions()
REFERENCE_BODIES = {
    rid: R.region_body((PACKAGE.parent / rel).read_text(), rid, rel) for rid, (rel, _) in FOUND.items()}

# every planted mistake the registry declares: (assignment, part, Mistake)
PLANTED = [(a.name, p.name, m) for a in ASSIGNMENTS.values() for p in a.parts for m in p.mistakes]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """{assignment name: its student copy}, made once for the module."""
    root = tmp_path_factory.mktemp("student_copies")
    for name in ASSIGNMENTS:
        make(name, root / name)
    return {name: root / name for name in ASSIGNMENTS}


def solved(copy: Path, dest: Path, change=None) -> Path:
    """A copy of a student copy with the reference regions pasted back, and optionally one region
    changed: change = (region, old text, new text)."""
    shutil.copytree(copy, dest)
    bodies = {rid: REFERENCE_BODIES[rid] for rid in json.loads((copy / "assignment.json").read_text())["regions"]}
    if change is not None:
        rid, old, new = change
        text = "\n".join(bodies[rid])
        assert text.count(old) == 1, f"the planted mistake's text occurs {text.count(old)} times in {rid}"
        bodies[rid] = text.replace(old, new).splitlines()
    set_region_bodies(dest, FOUND, bodies)
    return dest


def junit_cases(xml: Path):
    for case in ET.parse(xml).getroot().iter("testcase"):
        yield case.get("name"), case.find("failure") if case.find("failure") is not None else case.find("error")


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_student_copy_fails_only_with_not_implemented(copies, name, tmp_path):
    """`pytest` in the copy (its own package, its own tests): every test fails, each with
    NotImplementedError; nothing fails to import or collect. Its stubs also grade 0."""
    copy = copies[name]
    a = get_assignment(name)
    assert (copy / "README.md").read_text().startswith(f"# Assignment {a.number}: {a.title}")
    assert not (copy / "minigpt" / "kernels").exists()
    xml = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MINIGPT_BACKEND")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={xml}"], cwd=copy,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    cases = list(junit_cases(xml))
    assert len(cases) >= 2 * len(a.parts) - 1
    for test, failure in cases:
        assert failure is not None, f"{test} passed on the stubs"
        assert failure.get("message", "").startswith("NotImplementedError"), (test, failure.get("message"))
    # (a NotImplementedError can only come from the copy's package: the installed one is the reference)

    result = grade(copy, jobs=2)
    assert result["score"] == 0 and result["max_score"] == a.max_points
    for part in result["parts"]:
        assert part["status"] == "fail" and part["tests_passed"] == 0
        assert "NotImplementedError" in part["first_failure"], part


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_reference_pasted_back_scores_full_marks(copies, name, tmp_path):
    result = grade(solved(copies[name], tmp_path / "solved"), jobs=2)
    assert result["score"] == result["max_score"] == get_assignment(name).max_points, result
    assert all(p["status"] == "pass" and p["first_failure"] is None for p in result["parts"])


def test_every_assignment_plants_a_mistake():
    assert {name for name, _, _ in PLANTED} == set(ASSIGNMENTS)


@pytest.mark.parametrize("name, part, mistake", PLANTED, ids=[f"{n}-{p}" for n, p, _ in PLANTED])
def test_planted_mistake_costs_exactly_its_part(copies, name, part, mistake, tmp_path):
    a = get_assignment(name)
    assert mistake.region in a.part(part).regions
    result = grade(solved(copies[name], tmp_path / "planted", (mistake.region, mistake.old, mistake.new)), jobs=2)
    assert result["score"] == a.max_points - a.part(part).points, result
    for p in result["parts"]:
        assert p["passed"] == (p["name"] != part), p
    failed = next(p for p in result["parts"] if p["name"] == part)
    assert mistake.expect in failed["first_failure"], failed["first_failure"]


LINEAR_SIGN = ("linear_backward", "dx = (dout2 @ w.T)", "dx = -(dout2 @ w.T)")


def test_cli_grade_json_and_table(copies, tmp_path, capsys):
    """--json prints one object; a wrong gradient's failure names the worst element, its index,
    both values and the relative error; the student's edits outside the regions (their tests,
    the package's helpers) do not count."""
    planted = solved(copies["backprop"], tmp_path / "planted", LINEAR_SIGN)
    (planted / "tests" / "test_backprop_gelu.py").write_text("def test_nothing():\n    assert False\n")
    (planted / "minigpt" / "course" / "checks.py").write_text("raise SystemExit(3)\n")
    assert main(["assignment", "grade", str(planted), "--json", "--jobs", "2"]) == 0
    result = json.loads(capsys.readouterr().out)  # one JSON object and nothing else on stdout
    assert result["score"] == 80 and result["max_score"] == 100
    linear = result["parts"][0]
    assert linear["name"] == "linear" and linear["points"] == 0 and linear["tests_passed"] == 0
    msg = linear["first_failure"]
    assert msg.startswith("test_linear_backward_gradients: dx: gradient check failed, rel error 2.00e+00 > tolerance")
    assert "worst at index (" in msg and "analytic (yours) " in msg and "numerical " in msg
    rows = {line.split()[0]: line.split()[1:4] for line in format_score(result).splitlines()[2:]}
    assert rows["linear"] == ["0/20", "fail", "0/2"] and rows["gelu"] == ["20/20", "pass", "2/2"]
    assert rows["total"] == ["80/100"]


def test_hanging_and_crashing_parts_score_zero_and_grading_goes_on(copies, tmp_path):
    dest = solved(copies["optim"], tmp_path / "bad")
    set_region_bodies(dest, FOUND, {
        "adamw_update": ["    while True:", "        pass"],
        "get_lr": ["    import os", "    os.abort()"],
    })
    result = grade(dest, timeout=5.0, jobs=2)
    by_name = {p["name"]: p for p in result["parts"]}
    assert result["score"] == 0
    assert by_name["adamw"]["status"] == "timeout" and "timed out after 5 s" in by_name["adamw"]["first_failure"]
    assert by_name["lr_schedule"]["status"] == "crash" and "crashed" in by_name["lr_schedule"]["first_failure"]
    assert by_name["adamw"]["seconds"] < 30


def test_syntax_error_in_a_region_is_reported_where_it_is(copies, tmp_path):
    dest = solved(copies["kvcache"], tmp_path / "syntax", ("generate_step", "return logits[0, -1]", "return logits[0, -1"))
    result = grade(dest, jobs=2)
    by_name = {p["name"]: p for p in result["parts"]}
    assert result["score"] == 70 and by_name["attend"]["passed"]  # generate.py is not imported by attend's tests
    assert by_name["decode"]["status"] == "fail"
    assert "SyntaxError" in by_name["decode"]["first_failure"] and "minigpt/generate.py, line" in \
        by_name["decode"]["first_failure"]


HIDDEN_GELU_DTYPE = '''\
import numpy as np

from minigpt.layers.activation import gelu_backward, gelu_forward


def test_gelu_backward_keeps_float32():
    x = np.linspace(-2, 2, 7, dtype=np.float32)
    dx = gelu_backward(np.ones_like(x), gelu_forward(x)[1])
    assert dx.dtype == np.float32, f"dx dtype {dx.dtype} for float32 input"
'''


def test_hidden_tests(copies, tmp_path, capsys):
    """make checks hidden tests on the reference and leaves them out of the copy; grade runs
    them with their part: a float64 upcast the shipped tests cannot see costs the gelu part."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_gelu_dtype.py").write_text(HIDDEN_GELU_DTYPE)
    out = tmp_path / "copy"
    assert main(["assignment", "make", "backprop", "--out", str(out), "--hidden-tests", str(hidden)]) == 0
    assert not list(out.rglob("test_gelu_dtype.py"))
    upcast = solved(copies["backprop"], tmp_path / "upcast", ("gelu_backward", "dx = dout * (", "dx = dout.astype(np.float64) * ("))
    result = grade(upcast, hidden_tests=hidden, jobs=2)
    assert result["score"] == 80 and result["hidden_tests"] == ["test_gelu_dtype.py"]
    gelu = next(p for p in result["parts"] if p["name"] == "gelu")
    assert gelu["tests_total"] == 3 and gelu["tests_passed"] == 2
    assert gelu["first_failure"].startswith("test_gelu_backward_keeps_float32: dx dtype float64")
    # a hidden test that fails on the reference solution is refused by make
    (hidden / "test_linear_wrong.py").write_text("def test_wrong():\n    assert 1 == 2, 'a broken hidden test'\n")
    capsys.readouterr()
    assert main(["assignment", "make", "backprop", "--out", str(tmp_path / "copy2"), "--hidden-tests", str(hidden)]) == 2
    err = capsys.readouterr().err
    assert "part linear fails on the reference solution" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "copy2").exists()

"""The course kit's solution markers and registry, without running any grader (fast).

The marked reference package must behave exactly as the unmarked one: markers are comment lines,
so removing them leaves every module's syntax tree unchanged (and the whole suite runs on the
marked code). Every marked region belongs to a registered assignment and every registered region
is marked. Malformed markers are refused with the line they are on.
"""

import ast
import importlib
import json

import pytest

from minigpt.cli import main
from minigpt.course import ASSIGNMENTS, get_assignment
from minigpt.course import regions as R
from minigpt.course.kit import GRADERS, PACKAGE, hidden_test_files, reference_regions, student_bodies
from minigpt.errors import InputError

FOUND = reference_regions()
MARKED_FILES = sorted({rel for rel, _ in FOUND.values()})


def test_markers_are_comments_that_leave_the_syntax_tree_unchanged():
    assert len(MARKED_FILES) >= 7
    for rel in MARKED_FILES:
        text = (PACKAGE.parent / rel).read_text()
        stripped = R.strip_markers(text)
        assert stripped != text, f"{rel}: strip_markers removed nothing"
        removed = set(text.splitlines()) - set(stripped.splitlines())
        assert all(line.lstrip().startswith("#") for line in removed), f"{rel}: a removed line is not a comment"
        assert ast.dump(ast.parse(stripped)) == ast.dump(ast.parse(text)), rel


def test_every_marked_region_is_assigned_and_every_assigned_region_is_marked():
    assigned = [r for a in ASSIGNMENTS.values() for r in a.regions]
    assert len(assigned) == len(set(assigned)), "a region belongs to two assignments"
    assert set(assigned) == set(FOUND)


def test_registry_is_consistent():
    numbers = [a.number for a in ASSIGNMENTS.values()]
    assert len(set(numbers)) == len(numbers)
    for a in ASSIGNMENTS.values():
        assert get_assignment(a.name) is a and get_assignment(str(a.number)) is a
        names = [p.name for p in a.parts]
        assert len(set(names)) == len(names), a.name
        for p in a.parts:
            assert p.points > 0 and p.regions
            assert (GRADERS / p.tests).is_file(), p.tests
            assert FOUND[p.regions[0]][1].hint, f"region {p.regions[0]} has no hint line"


def test_stub_then_paste_back_restores_the_reference_exactly():
    for rel in MARKED_FILES:
        text = (PACKAGE.parent / rel).read_text()
        ids = [r.id for r in R.find_regions(text, rel)]
        stubbed = R.replace_bodies(text, dict.fromkeys(ids), rel)
        assert stubbed != text and "raise NotImplementedError(" in stubbed
        ast.parse(stubbed)  # still valid Python
        bodies = {rid: R.region_body(text, rid, rel) for rid in ids}
        assert R.replace_bodies(stubbed, bodies, rel) == text


def test_stub_keeps_the_hint_and_the_markers(tmp_path, monkeypatch):
    text = "def f(x):\n    y = 1\n    # BEGIN SOLUTION f_body\n    # HINT: return x + y\n    return x + y\n" \
           "    # END SOLUTION\n"
    stubbed = R.replace_bodies(text, {"f_body": None})
    assert stubbed == ("def f(x):\n    y = 1\n    # BEGIN SOLUTION f_body\n    # HINT: return x + y\n"
                       "    raise NotImplementedError('f_body: return x + y')\n    # END SOLUTION\n")
    (tmp_path / "stubbed_module.py").write_text(stubbed)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("stubbed_module")
    with pytest.raises(NotImplementedError, match="f_body: return x"):
        module.f(1)
    assert R.strip_markers(text) == "def f(x):\n    y = 1\n    return x + y\n"


@pytest.mark.parametrize("text, message", [
    ("def f():\n    # BEGIN SOLUTION a\n    pass\n", "has no END SOLUTION"),
    ("def f():\n    pass\n    # END SOLUTION\n", "without a BEGIN"),
    ("def f():\n    # BEGIN SOLUTION a\n    # BEGIN SOLUTION b\n    # END SOLUTION\n", "do not nest"),
    ("# BEGIN SOLUTION a\nx = 1\n# END SOLUTION\n", "not inside a function"),
    ("def f():\n    # BEGIN SOLUTION a\n    pass\n  # END SOLUTION\n", "indented differently"),
    ("def f():\n    # BEGIN SOLUTION\n    pass\n", "malformed solution marker"),
    ("def f():\n    # END SOLUTION of a\n", "malformed solution marker"),
])
def test_malformed_markers_are_refused_with_their_line(text, message):
    with pytest.raises(InputError, match=message):
        R.find_regions(text, "x.py")


def test_duplicate_region_ids_are_refused(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("a.py", "b.py"):
        (pkg / name).write_text("def f():\n    # BEGIN SOLUTION same\n    pass\n    # END SOLUTION\n")
    with pytest.raises(InputError, match="defined twice"):
        R.package_regions(pkg)


def test_a_student_copy_is_not_a_reference(tmp_path):
    pkg = tmp_path / "minigpt"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n    # BEGIN SOLUTION f\n    # HINT: h\n    raise NotImplementedError('f: h')\n"
                              "    # END SOLUTION\n")
    with pytest.raises(InputError, match="is a student copy"):
        reference_regions(pkg)


def test_student_bodies_with_missing_or_broken_markers(tmp_path):
    a = get_assignment("optim")
    (tmp_path / "minigpt").mkdir()
    reference = (PACKAGE / "optim.py").read_text()
    broken = reference.replace("    # END SOLUTION\n", "", 1)  # adamw_update's END line deleted
    (tmp_path / "minigpt" / "optim.py").write_text(broken)
    bodies = student_bodies(a, tmp_path, FOUND)
    assert len(bodies) == 2
    for body in bodies.values():  # the whole file's markers are broken: both regions are lost
        assert len(body) == 1 and "raise NotImplementedError(" in body[0] and "broken solution markers" in body[0]
    (tmp_path / "minigpt" / "optim.py").unlink()
    assert "minigpt/optim.py is missing" in student_bodies(a, tmp_path, FOUND)["get_lr"][0]
    (tmp_path / "minigpt" / "optim.py").write_text(reference)
    assert student_bodies(a, tmp_path, FOUND)["get_lr"] == R.region_body(reference, "get_lr")


def test_hidden_test_files_map_to_parts(tmp_path):
    a = get_assignment("backprop")
    for name in ("test_cross_entropy.py", "test_cross_entropy_more.py", "test_linear_2.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "helper.py").write_text("")  # not a test file: ignored
    found = hidden_test_files(a, tmp_path)
    assert {k: sorted(f.name for f in v) for k, v in found.items()} == {
        "cross_entropy": ["test_cross_entropy.py", "test_cross_entropy_more.py"], "linear": ["test_linear_2.py"]}
    (tmp_path / "test_attention.py").write_text("")
    with pytest.raises(InputError, match="test_attention.py names no part of backprop"):
        hidden_test_files(a, tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        hidden_test_files(a, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no test_"):
        hidden_test_files(a, tmp_path / "empty")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json(capsys):
    code, out, err = run_cli(capsys, "assignment", "list", "--json")
    assert code == 0
    listing = json.loads(out)
    assert [a["name"] for a in listing["assignments"]] == list(ASSIGNMENTS)
    assert all(a["max_points"] == sum(p["points"] for p in a["parts"]) for a in listing["assignments"])
    code, out, _ = run_cli(capsys, "assignment", "list")
    assert code == 0 and "backprop" in out and "layernorm_backward" in out


def one_line_error(capsys, *argv) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_make_bad_input(capsys, tmp_path):
    assert "unknown assignment 'nope'" in one_line_error(capsys, "assignment", "make", "nope", "--out", str(tmp_path / "x"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    assert "not an empty directory" in one_line_error(capsys, "assignment", "make", "backprop", "--out",
                                                      str(tmp_path / "full"))
    assert "not an empty directory" in one_line_error(capsys, "assignment", "make", "backprop", "--out",
                                                      str(tmp_path / "full" / "f.txt"))
    assert "not a directory" in one_line_error(capsys, "assignment", "make", "backprop", "--out", str(tmp_path / "y"),
                                               "--hidden-tests", str(tmp_path / "nowhere"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_grade_bad_input(capsys, tmp_path):
    assert "no assignment.json" in one_line_error(capsys, "assignment", "grade", str(tmp_path))
    (tmp_path / "assignment.json").write_text("[1, 2]")
    assert "not an assignment manifest" in one_line_error(capsys, "assignment", "grade", str(tmp_path))
    (tmp_path / "assignment.json").write_text(json.dumps({"assignment": "backprop"}))
    assert "no minigpt/ package" in one_line_error(capsys, "assignment", "grade", str(tmp_path))
    (tmp_path / "minigpt").mkdir()
    (tmp_path / "assignment.json").write_text(json.dumps({"assignment": "nope"}))
    assert "names assignment 'nope'" in one_line_error(capsys, "assignment", "grade", str(tmp_path))
    assert "not a directory" in one_line_error(capsys, "assignment", "grade", str(tmp_path / "nowhere"))
    (tmp_path / "assignment.json").write_text(json.dumps({"assignment": "backprop"}))
    assert "--timeout must be > 0" in one_line_error(capsys, "assignment", "grade", str(tmp_path), "--timeout", "0")
    assert "--jobs must be" in one_line_error(capsys, "assignment", "grade", str(tmp_path), "--jobs", "0")


def test_grade_without_pytest_installed(capsys, tmp_path, monkeypatch):
    from minigpt.course import kit

    (tmp_path / "minigpt").mkdir()
    (tmp_path / "assignment.json").write_text(json.dumps({"assignment": "backprop"}))
    monkeypatch.setattr(kit, "pytest_available", lambda: False)
    assert "grading needs pytest" in one_line_error(capsys, "assignment", "grade", str(tmp_path))

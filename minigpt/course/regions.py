"""Solution regions: the marked lines of the reference code that an assignment asks students to write.

A region is a run of whole lines inside a function, fenced by two comment lines:

    def linear_backward(dout, cache):
        x, w, has_bias = cache
        # BEGIN SOLUTION linear_backward
        # HINT: fold (B, T) into rows; dx = dout @ w.T, ...      (optional, one line)
        ...the reference code...
        # END SOLUTION
        return dx, dw, db

The markers are comments, so the reference package runs exactly as without them (the tests
check that removing them leaves every module's syntax tree unchanged). In a student copy the
lines between the markers (the hint kept) become `raise NotImplementedError(<id>: <hint>)`; the
markers stay, so the student writes between them and the grader can lift the student's lines
out again (CS231n's START/END OF YOUR CODE lines do the same job).

Rules, checked when a file is read: markers come in BEGIN/END pairs, do not nest, have the same
indentation, and the region id (a Python-identifier-like name) is unique in the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<id>[A-Za-z_][A-Za-z0-9_]*)[ \t]*$")
END = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION[ \t]*$")
HINT = re.compile(r"^[ \t]*# HINT: ?(?P<hint>.*)$")
ANY_MARKER = re.compile(r"^[ \t]*# (BEGIN|END) SOLUTION\b")


@dataclass(frozen=True)
class Region:
    """One solution region of a file. Lines are 0-based indices into the file's lines:
    begin is the BEGIN line, end the END line; the body is lines begin+1 .. end-1 (hint included)."""

    id: str
    begin: int
    end: int
    indent: str
    hint: str | None


def find_regions(text: str, where: str = "<text>") -> list[Region]:
    """Every region of a file's text, in order. Malformed markers raise InputError naming the line."""
    lines = text.splitlines()
    regions, open_begin = [], None
    for i, line in enumerate(lines):
        b, e = BEGIN.match(line), END.match(line)
        if not b and not e:
            if ANY_MARKER.match(line):
                raise InputError(f"{where}:{i + 1}: malformed solution marker {line.strip()!r} "
                                 "(expected '# BEGIN SOLUTION <id>' or '# END SOLUTION')")
            continue
        if b:
            if open_begin is not None:
                raise InputError(f"{where}:{i + 1}: BEGIN SOLUTION inside region {open_begin[1]!r} (regions do not nest)")
            if not b["indent"]:
                raise InputError(f"{where}:{i + 1}: region {b['id']!r} is not inside a function (no indentation)")
            open_begin = (i, b["id"], b["indent"])
        else:
            if open_begin is None:
                raise InputError(f"{where}:{i + 1}: END SOLUTION without a BEGIN SOLUTION")
            start, rid, indent = open_begin
            if e["indent"] != indent:
                raise InputError(f"{where}:{i + 1}: END SOLUTION of region {rid!r} is indented differently from its BEGIN")
            hint = HINT.match(lines[start + 1]) if start + 1 < i else None
            regions.append(Region(rid, start, i, indent, hint["hint"].strip() if hint else None))
            open_begin = None
    if open_begin is not None:
        raise InputError(f"{where}:{open_begin[0] + 1}: region {open_begin[1]!r} has no END SOLUTION")
    return regions


def package_regions(package_dir: Path, skip=("course",)) -> dict[str, tuple[str, Region]]:
    """{region id: (path relative to the package's parent, Region)} over every .py file of a
    package, except the subpackages in skip (the course kit itself shows markers in its docs)."""
    package_dir = Path(package_dir)
    found: dict[str, tuple[str, Region]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).parts
        if "__pycache__" in parts or parts[0] in skip:
            continue
        rel = path.relative_to(package_dir.parent).as_posix()
        for r in find_regions(path.read_text(), rel):
            if r.id in found:
                raise InputError(f"region {r.id!r} is defined twice: in {found[r.id][0]} and {rel}")
            found[r.id] = (rel, r)
    return found


def region_body(text: str, region_id: str, where: str = "<text>") -> list[str] | None:
    """The lines between a region's markers (hint included), or None when the file lacks it."""
    lines = text.splitlines()
    for r in find_regions(text, where):
        if r.id == region_id:
            return lines[r.begin + 1 : r.end]
    return None


def stub_lines(region: Region) -> list[str]:
    """What a student sees between the markers: the hint, then the NotImplementedError."""
    message = f"{region.id}: {region.hint}" if region.hint else f"{region.id}: write this region"
    hint = [f"{region.indent}# HINT: {region.hint}"] if region.hint else []
    return [*hint, f"{region.indent}raise NotImplementedError({message!r})"]


def replace_bodies(text: str, bodies: dict, where: str = "<text>") -> str:
    """text with the body of every region named in bodies replaced by bodies[id] (a list of lines,
    or None for the stub). Markers are kept; regions not named are left alone."""
    lines = text.splitlines()
    out, pos = [], 0
    for r in find_regions(text, where):
        if r.id not in bodies:
            continue
        body = bodies[r.id]
        out += lines[pos : r.begin + 1] + (stub_lines(r) if body is None else list(body))
        pos = r.end
    out += lines[pos:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def strip_markers(text: str) -> str:
    """text without its BEGIN/END SOLUTION and HINT lines (the reference code as if unmarked)."""
    kept, inside_start = [], False
    for line in text.splitlines():
        if BEGIN.match(line):
            inside_start = True
            continue
        if inside_start and HINT.match(line):
            inside_start = False
            continue
        inside_start = False
        if END.match(line):
            continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if text.endswith("\n") else "")

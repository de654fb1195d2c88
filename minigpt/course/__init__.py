"""The course kit: assignments cut out of minigpt's own reference code and graded by its tests.

    regions.py      the `# BEGIN SOLUTION <id>` / `# END SOLUTION` markers in the reference code
    assignments.py  the registry: each assignment's parts, their regions, grading files, points
    checks.py       the checks grading tests make, with failures that carry the numbers
    graders/        the grading tests, one file per part
    kit.py          make a student copy, grade one

`minigpt assignment list | make NAME --out DIR | grade DIR` is the command line; the
instructor's guide is docs/instructors.md.
"""

from .assignments import ASSIGNMENTS, Assignment, Part, get_assignment
from .kit import grade, make

__all__ = ["ASSIGNMENTS", "Assignment", "Part", "get_assignment", "grade", "make"]

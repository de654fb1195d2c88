"""The grading tests, one file per part of an assignment (test_<assignment>_<part>.py).

`minigpt assignment make` copies an assignment's files into the student copy's tests/; `minigpt
assignment grade` runs this package's own copies (not the student's, which the student may have
edited) against the student's regions, one part per subprocess. They are plain pytest files,
float64 and seeded, and they run on the NumPy backend: the student's code is the NumPy layer.
"""

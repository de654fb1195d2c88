"""Assignment distill, part loss: the soft-target divergences of soft_loss_forward (KL, reverse
KL, Jensen-Shannon) between the teacher's and the student's distributions at temperature T."""

import math

import numpy as np

from minigpt.compress.distill import soft_loss_forward


def fixed_logits():
    """Student and teacher logits (B=1, T=3, V=4), from sin and cos (no random streams)."""
    s = (2 * np.sin(0.9 * np.arange(12.0))).reshape(1, 3, 4)
    t = (2 * np.cos(0.6 * np.arange(12.0) + 0.2)).reshape(1, 3, 4)
    return s, t


# soft_loss_forward(s, t, T, targets, divergence)[0] by the reference implementation:
# (T = 2, targets [[0, -1, 3]], so position 1 is left out) and (T = 1, no targets)
EXPECTED = {
    "kl": (0.9676935518413775, 0.5741243838999494),
    "reverse_kl": (0.8572236340438095, 0.4614656423585122),
    "js": (0.22021398931485225, 0.11456093226641284),
}


def test_soft_loss_values():
    s, t = fixed_logits()
    for divergence, (at_2, at_1) in EXPECTED.items():
        got = soft_loss_forward(s, t, 2.0, np.array([[0, -1, 3]]), divergence)[0]
        assert math.isclose(got, at_2, rel_tol=1e-9), (
            f"{divergence} at T=2 with position 1 ignored: yours {got!r}, expected {at_2!r}")
        got = soft_loss_forward(s, t, 1.0, None, divergence)[0]
        assert math.isclose(got, at_1, rel_tol=1e-9), f"{divergence} at T=1: yours {got!r}, expected {at_1!r}"


def test_soft_loss_properties():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 5)) * 3, rng.normal(size=(2, 3, 5)) * 3
    for divergence in ("kl", "reverse_kl", "js"):
        same = soft_loss_forward(s, s.copy(), 1.5, None, divergence)[0]
        assert same == 0.0, f"{divergence}: equal logits must give exactly 0, got {same!r}"
    js = soft_loss_forward(s, t, 1.0, None, "js")[0]
    assert 0 < js <= math.log(2), f"js at T=1 must lie in (0, ln 2], got {js!r}"
    kl = soft_loss_forward(s, t, 1.0, None, "kl")[0]
    rkl = soft_loss_forward(t, s, 1.0, None, "reverse_kl")[0]
    assert math.isclose(kl, rkl, rel_tol=1e-12), (
        f"KL(p || q) with student s, teacher t ({kl!r}) must equal reverse KL with the roles swapped ({rkl!r})")

"""Shared test setup: hypothesis profiles and the optional tiny Shakespeare corpus.

Profiles (choose with HYPOTHESIS_PROFILE=name or pytest --hypothesis-profile=name):
  ci        the default: deterministic, no example database, deadline off (JIT warm-up and the
            first call of a layer would trip a deadline), bounded example counts so the whole
            suite stays well under 15 minutes on 2 cores
  dev       random (not derandomized) exploration with the same bounds
  thorough  many more examples, for a nightly or manual run
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture(scope="session")
def shakespeare_path():
    """The tiny Shakespeare text from ../shared/data (or $MINIGPT_SHAKESPEARE); skip when absent."""
    candidates = [os.environ.get("MINIGPT_SHAKESPEARE"), ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    pytest.skip("tiny Shakespeare not found (set MINIGPT_SHAKESPEARE or run `minigpt data shakespeare`)")

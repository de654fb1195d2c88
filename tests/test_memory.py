"""minigpt.memory: glibc's malloc thresholds, raised so freed arrays are reused (see its docstring
for the measurement). The setting itself is a speed matter, measured by `minigpt bench`; these
tests check the call is accepted where it applies and is harmless where it does not."""

import ctypes
import sys

import pytest

from minigpt import memory


def glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


@pytest.mark.skipif(not glibc(), reason="mallopt's thresholds are glibc's")
def test_glibc_accepts_both_thresholds_and_a_second_call():
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False


def test_the_command_sets_it_before_anything_else(monkeypatch):
    import minigpt.cli

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("set") or True)
    with pytest.raises(SystemExit) as e:
        minigpt.cli.main(["--version"])  # argparse exits after printing the version
    assert e.value.code == 0 and calls == ["set"]

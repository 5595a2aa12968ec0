"""bitesm.runtime: the steady glibc allocator the ``bitesm`` command sets at start."""

from __future__ import annotations

import ctypes
import sys

import pytest

from bitesm import runtime
from bitesm.cli import main as bitesm_main
from bitesm.errors import UserInputError


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.fixture()
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    for name in (runtime.MALLOC_ENV, "GLIBC_TUNABLES", *runtime._USER_TUNABLES):
        monkeypatch.delenv(name, raising=False)
    return libc


def test_sets_mmap_and_trim_thresholds(fake_libc):
    assert runtime.steady_malloc() is True
    # glibc malloc.h: M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1
    assert fake_libc.calls == [(-3, 32 * 2**20), (-1, 2**30)]


@pytest.mark.parametrize("env", [("BITESM_MALLOC", "default"), ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                 ("MALLOC_TRIM_THRESHOLD_", "0"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_leaves_malloc_alone_when_asked_or_tuned_by_the_user(fake_libc, monkeypatch, env):
    monkeypatch.setenv(*env)
    assert runtime.steady_malloc() is False and fake_libc.calls == []


def test_not_glibc_or_not_linux(monkeypatch, fake_libc):
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: object())  # a libc without mallopt
    assert runtime.steady_malloc() is False
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.steady_malloc() is False


def test_bad_value_names_the_variable(fake_libc, monkeypatch):
    monkeypatch.setenv("BITESM_MALLOC", "fast")
    with pytest.raises(UserInputError, match=r"BITESM_MALLOC='fast' is not a choice; set it to one of steady, default"):
        runtime.steady_malloc()


def test_the_bitesm_command_applies_it_before_its_work(fake_libc, tmp_path):
    with pytest.raises(SystemExit):
        bitesm_main(["--help"])
    assert fake_libc.calls == []  # printing help allocates nothing worth it
    assert bitesm_main(["eval", "watch", str(tmp_path / "no_run"), "--once"]) == 2
    assert fake_libc.calls == [(-3, 32 * 2**20), (-1, 2**30)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_real_glibc_accepts_the_settings(monkeypatch):
    for name in (runtime.MALLOC_ENV, "GLIBC_TUNABLES", *runtime._USER_TUNABLES):
        monkeypatch.delenv(name, raising=False)
    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    assert runtime.steady_malloc() is True

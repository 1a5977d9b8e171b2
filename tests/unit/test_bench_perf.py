"""bench.perf names the bench's own processes in perf's per-thread lines, and a step still
runs, unprofiled, when `perf` is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench import perf


def test_named_labels_known_threads_and_leaves_the_rest() -> None:
    report = ("    43.61%     6899:python\n"
              "    33.58%        0:swapper\n"
              "     8.33%     6966:postgres")
    named = perf._named(report, {6899: "worker1", 6966: "serve's backend"}).splitlines()
    assert named[0].endswith("6899:python  (worker1)")
    assert named[1].endswith("0:swapper")
    assert named[2].endswith("6966:postgres  (serve's backend)")


def test_thread_names_cover_every_thread_of_a_process() -> None:
    names = perf._thread_names({os.getpid(): "tests"})
    threads = {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")}
    assert threads <= set(names)
    assert names[os.getpid()] == "tests"


def test_without_perf_the_step_runs_unprofiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_PERF", str(tmp_path))
    monkeypatch.setenv("PATH", "")
    ran = []
    with perf.machine_profile("step"):
        ran.append(True)
    assert ran == [True]
    assert "no `perf` on the PATH; step not profiled" in capsys.readouterr().err


def test_without_bench_perf_nothing_is_recorded(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_PERF", raising=False)
    with perf.machine_profile("step"):
        pass
    assert not list(os.scandir(str(tmp_path)))

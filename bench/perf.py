"""Whole-machine CPU profiles with Linux `perf` (`BENCH_PERF=<dir> python -m bench ...`).

py-spy (`BENCH_PROFILE`) sees Python frames only. Where a figure is bound by PostgreSQL's
own backend or by the kernel (4a's floor on PostgreSQL: one backend writing 100,000 events,
deliveries and status updates), the profile that explains it has to sample C code in every
process: `perf record -a` for the length of one step, then a summary by process and by
function, written next to the raw data. Without BENCH_PERF, or without `perf` on the PATH,
a step runs unprofiled (a warning says so in the second case).

`python -m bench.perf FILE.data [--comm postgres] [--top N]` prints the summary of a file
again, or of one process name only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from bench.env import Proc

FREQUENCY = "499"  # samples per second and CPU: a few thousand per second-long step


def _report(data: Path, sort: str, comm: str | None = None, top: int = 25,
            children: bool = False) -> str:
    args = ["perf", "report", "-i", str(data), "--stdio", "-g", "none", "--sort", sort,
            "--percent-limit", "0.5", "--children" if children else "--no-children"]
    if comm:
        args += ["--comms", comm]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    # Unnamed frames (a static function of a stripped binary) say nothing on their own.
    lines = [ln for ln in out.splitlines()
             if ln.strip() and not ln.startswith("#") and "] 0x" not in ln]
    return "\n".join(lines[:top])


def _named(report: str, names: Mapping[int, str]) -> str:
    """`1234:python` -> `1234:python  (worker1)` for the processes the bench started."""
    out = []
    for line in report.splitlines():
        pid = line.split()[-1].partition(":")[0]
        name = names.get(int(pid)) if pid.isdigit() else None
        out.append(f"{line.rstrip()}  ({name})" if name else line.rstrip())
    return "\n".join(out)


def summary(data: Path, comm: str | None = None, top: int = 25,
            names: Mapping[int, str] | None = None) -> str:
    """Samples by process name, by process (the bench's own named) and, for `comm` or every
    process, by function."""
    parts = [f"# {data.name}: share of all samples (every CPU) by process name",
             _report(data, "comm", top=top)]
    if comm is None:
        parts += ["# by process", _named(_report(data, "pid", top=top), names or {}),
                  f"# by process name and function (top {top})",
                  _report(data, "comm,sym", top=top)]
    else:
        parts += [f"# {comm} only, by function (share of all samples)",
                  _report(data, "sym", comm=comm, top=top),
                  f"# {comm} only, by function with what it calls (children, self)",
                  _report(data, "sym", comm=comm, top=2 * top, children=True)]
    return "\n".join(parts) + "\n"


def _thread_names(names: Mapping[int, str]) -> dict[int, str]:
    """perf's `pid` is a thread's id: name every thread of the bench's processes (serve's
    SQLite thread does the restock's writes on SQLite)."""
    out = dict(names)
    for pid, name in names.items():
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                if int(task.name) != pid:
                    out[int(task.name)] = f"{name}, another thread"
    return out


@contextlib.contextmanager
def machine_profile(label: str, procs: Iterable[Proc] = ()) -> Iterator[None]:
    """Record every CPU while the block runs, if BENCH_PERF names a directory; `procs` (the
    bench's serve, workers, receiver) are named in the summary."""
    out_dir = os.environ.get("BENCH_PERF")
    if not out_dir:
        yield
        return
    if shutil.which("perf") is None:
        print(f"bench: BENCH_PERF set but no `perf` on the PATH; {label} not profiled",
              file=sys.stderr)
        yield
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    data = Path(out_dir).resolve() / f"{label}.data"
    rec = subprocess.Popen(["perf", "record", "-a", "-g", "-F", FREQUENCY, "-o", str(data)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf opens its counters on every CPU before it samples
    try:
        yield
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            rec.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait()
    if data.exists():
        names = _thread_names({p.pid: p.name for p in procs} | {os.getpid(): "bench harness"})
        data.with_suffix(".txt").write_text(summary(data, names=names) + "\n" +
                                            summary(data, comm="postgres"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--comm", help="one process name only (e.g. postgres, python)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summary(args.file, args.comm, args.top), end="")


if __name__ == "__main__":
    main()

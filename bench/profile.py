"""Summarise a py-spy collapsed-stack file (`BENCH_PROFILE=<dir> python -m bench ...`).

`python -m bench.profile FILE [--top N] [--focus TEXT]`: where the sampled time goes.

py-spy counts a thread blocked in `queue.get` or the event loop's `select` as busy in some
builds; samples whose top frame is one of those waits are dropped (`IDLE`). `--focus`
keeps only stacks with a frame containing TEXT (e.g. `APIRoute.handle`); percentages are of
the kept samples. Four lists: top of stack (self), any frame (total), total for our own
code (frames under stockbell/), and what the event loop was running (a task, a protocol's
callback; with a native profile, `BENCH_PROFILE_NATIVE=1`, also its C-only work).
"""

from __future__ import annotations

import argparse
from collections import Counter

IDLE = ("_connection_worker_thread (aiosqlite/core.py:59)",  # waiting for work
        "Runner.run (asyncio/runners.py:118)",  # the loop with nothing to run
        "select (selectors.py", "_run_once (asyncio/base_events.py:1898)",
        "wait (threading.py", "_worker (concurrent/futures/thread.py")
WAITS_IN_C = ("epoll_wait", "epoll_pwait")  # a native profile's event loop polling


def _idle(frames: list[str]) -> bool:
    """Whether a sample is a thread waiting. Said by its last Python frame: in a native
    profile (`BENCH_PROFILE_NATIVE`) C frames follow it, a lock's or a queue's wait under a
    waiting thread, a socket read under the event loop's own frame (work, not waiting)."""
    if frames[-1].startswith(WAITS_IN_C):
        return True
    python = [x for x in frames if ".py:" in x]
    if not python:
        return False
    last = python[-1]
    if last.startswith("Runner.run (asyncio/runners.py:118)"):
        return last == frames[-1]  # with C frames under it, the loop works in C
    return any(pattern in last for pattern in IDLE)


def _fn(frame: str) -> str:
    """`name (file:line)` -> `name (file)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    where = where.removesuffix(")")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else frame


LOOP = ("Runner.run (asyncio/runners.py", "uv_run (")  # the event loop's own frames


def _entry(frames: list[str]) -> str:
    """What the event loop was running: the first Python frame under its last loop frame (a
    task's coroutine, or a protocol's callback), or, for C-only work (a native profile's
    socket reads and polls), the first two C frames under it."""
    loop = max((i for i, x in enumerate(frames) if x.startswith(LOOP)), default=-1)
    rest = frames[loop + 1:]
    for x in rest:
        if ".py:" in x:
            return _fn(x)
    return " > ".join(_fn(x) for x in rest[:2]) or "(the loop itself)"


def summarise(path: str, top: int, focus: str | None) -> str:
    entries: Counter[str] = Counter()
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    samples = dropped = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            frames = stack.split(";")
            if _idle(frames) or (focus and not any(focus in x for x in frames)):
                dropped += count
                continue
            samples += count
            entries[_entry(frames)] += count
            self_c[_fn(frames[-1])] += count
            fns = {_fn(x) for x in frames}
            for fn in fns:
                total_c[fn] += count
                if "stockbell/" in fn:
                    ours[fn] += count
    if not samples:
        return f"{path}: no samples kept ({dropped} dropped)"
    out = [f"{path}: {samples} samples kept at 100/s ({dropped} idle or outside "
           f"--focus dropped){'; focus: ' + focus if focus else ''}", "", "self (top of stack):"]
    out += [f"  {100 * c / samples:5.1f}%  {fr}" for fr, c in self_c.most_common(top)]
    out += ["", "total, any library:"]
    out += [f"  {100 * c / samples:5.1f}%  {fr}" for fr, c in total_c.most_common(top)]
    out += ["", "total, stockbell code:"]
    out += [f"  {100 * c / samples:5.1f}%  {fr}" for fr, c in ours.most_common(top)]
    out += ["", "by what the event loop ran (BENCH_PROFILE_NATIVE=1 shows its C work too):"]
    out += [f"  {100 * c / samples:5.1f}%  {fr}" for fr, c in entries.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--focus", default=None)
    args = parser.parse_args()
    print(summarise(args.file, args.top, args.focus))


if __name__ == "__main__":
    main()

"""bench.profile says what the event loop was running: a task's coroutine, a protocol's
callback, or, in a native profile, the loop's own C work; idle samples are left out."""

from __future__ import annotations

from pathlib import Path

from bench import profile

LOOP = "main (stockbell/cli.py:229);run (uvloop/__init__.py:92);Runner.run (asyncio/runners.py:118)"
NATIVE = f"{LOOP};run_until_complete (loop.c:35410);uv_run (core.c:452)"


def test_samples_are_counted_by_what_the_loop_ran(tmp_path: Path) -> None:
    raw = tmp_path / "worker.txt"
    raw.write_text("\n".join([
        # a task's step, seen without C frames (py-spy's default) and with them
        f"{LOOP};Dispatcher._lane (stockbell/delivery/dispatcher.py:267);"
        "Sender.post (stockbell/delivery/sender.py:140) 3",
        f"{NATIVE};task_step (_asynciomodule.c:2990);"
        "Dispatcher._lane (stockbell/delivery/dispatcher.py:267) 1",
        # the loop reading a socket in C, no Python frame under it
        f"{NATIVE};uv__io_poll (linux.c:431);uv__stream_io (stream.c:1234);"
        "uv__read (stream.c:1100) 4",
        # idle, dropped: the loop with nothing to run, polling in C, and a thread waiting
        f"{LOOP} 4",
        f"{NATIVE};uv__io_poll (linux.c:431);epoll_pwait (libc.so.6) 3",
        "Thread.run (threading.py:975);_connection_worker_thread (aiosqlite/core.py:59);"
        "_queue_SimpleQueue_get (_queuemodule.c.h:177) 2",
        "Thread.run (threading.py:975);WalCheckpointer._loop (stockbell/store/checkpoint.py:62);"
        "Event.wait (threading.py:629) 1",
    ]) + "\n")
    out = profile.summarise(str(raw), top=10, focus=None)
    assert "8 samples kept" in out
    assert "10 idle" in out
    entries = out.split("by what the event loop ran")[1].splitlines()[1:]
    assert entries[0].split() == ["50.0%", "Dispatcher._lane", "(stockbell/delivery/dispatcher.py)"]
    assert entries[1].split() == ["50.0%", "uv__io_poll", "(linux.c)", ">", "uv__stream_io",
                                  "(stream.c)"]

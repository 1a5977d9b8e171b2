"""`instructions`: CPU instructions per request, counted by valgrind, in one process.

The machine's speed swings up to 2x within minutes, so rates from different runs do not
compare and small changes drown. An instruction count does not swing: the same code on the
same data counts the same within 0.2 %. This runs `bench/inprocess.py` under
`valgrind --tool=callgrind` (the app without a server; every thread counted, the kernel's
work not) for the bare route and for a one-change POST, 16 requests at a time, and for the
group-commit transaction alone (16 changes per transaction, no HTTP). The ratio against the
bare route is bar 1's measure without uvicorn's share, which both requests pay alike.
Needs valgrind. With `--db postgres` only Stockbell's side is counted: PostgreSQL's work
runs in its own processes (`bench txn` measures its CPU), and so do the round trips' waits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from bench.env import Env
from bench.report import Row, Table

SIZE = 16  # about the group commit's group under `ingest`'s 32 clients


def count(env: Env, route: str, groups: int) -> float:
    """Instructions per request (per change for `txn`)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={env.tmp}/callgrind.%p.out",
         sys.executable, "-m", "bench.inprocess", route, str(groups), str(SIZE)],
        env=env.env(BENCH_SECRET=env.secret, BENCH_CALLGRIND="1", PYTHONHASHSEED="0"),
        capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"bench.inprocess {route} failed: {out.stderr[-2000:]}")
    return int(found.group(1)) / (groups * SIZE)


def instructions(db: str, quick: bool) -> Table:
    if shutil.which("valgrind") is None:
        raise RuntimeError("`instructions` needs valgrind (Debian: apt-get install valgrind)")
    groups = 4 if quick else 20
    t = Table(f"instructions (in-process, {db}{', quick' if quick else ''})")
    with Env(db) as env:
        env.cli("migrate")
        env.make_key()
        bare = count(env, "bare", groups)
        change = count(env, "change", groups)
        txn = count(env, "txn", groups)
    t.add(Row("bare GET /v1/whoami: instructions per request", bare, ""))
    t.add(Row("POST /v1/inventory/changes, 1 change: instructions per request", change, "",
              bare, "the bare route", ratio=bare / change))
    t.add(Row("of which the group transaction, per change (apply_grouped, no HTTP)", txn, "",
              change, "the whole POST"))
    t.notes.append(f"{groups} rounds of {SIZE} concurrent requests after 20 rounds of warm-up, "
                   "each route in its own process under valgrind --tool=callgrind; the "
                   "POST's ratio is bare / POST, as bar 1's is (rate / bare rate)")
    if db == "postgres":
        t.notes.append("Stockbell's side only: PostgreSQL's work, in its own processes, is "
                       "not counted")
    return t

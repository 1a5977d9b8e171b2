"""`python -m bench <scenario> [--db sqlite|postgres] [--quick]`

Scenarios: ingest, batch, subs, fanout, latency, peer, memory, reads (GETs beside the bare
route, not a bar), retention and replay (the purge's and an endpoint replay's cost per event as the
log grows), eventlog (a created_after page on a month's log; these three are not bars),
floorparts (PostgreSQL only, not a bar: bar 4a's floor with each table's secondary indexes
dropped in turn), and the in-process routing, txn and instructions (valgrind) (`all`: every
one but memory, reads, retention, replay, eventlog, floorparts, routing, txn, instructions).
Each starts its own database, `stockbell serve`/`worker` and receiver processes on 127.0.0.1,
runs bounded load, stops everything, and prints one table: figure, baseline measured in the
same run, ratio, bar.
Exit status 0 even when a bar does not hold (the table says so); 2 on a harness error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from bench.scenarios import SCENARIOS

PG_ONLY = ("floorparts",)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="small and short (< 1 minute)")
    args = parser.parse_args()
    if args.scenario in PG_ONLY and args.db != "postgres":
        parser.error(f"{args.scenario} measures PostgreSQL only: add --db postgres")
    # not part of `all`
    apart = ("memory", "reads", "retention", "replay", "eventlog", "floorparts", "routing",
             "txn", "instructions")
    names = [n for n in SCENARIOS if n not in apart] if args.scenario == "all" \
        else [args.scenario]
    status = 0
    for name in names:
        t0 = time.monotonic()
        os.environ["BENCH_LABEL"] = name  # names py-spy files under BENCH_PROFILE
        try:
            table = SCENARIOS[name](args.db, args.quick)
        except Exception:
            traceback.print_exc()
            print(f"### {name} ({args.db}): harness error, see above\n")
            status = 2
            continue
        print(table.render())
        print(f"\n({name} took {time.monotonic() - t0:.0f} s)\n", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""SQLite's WAL checkpoints, taken off the writers' commits by a thread of their own.

By default SQLite checkpoints inside the commit that grows the log past 1,000 pages: that
commit copies the whole log back into the database file and syncs it before it returns, and
every writer queued behind it waits. A restock firing 100,000 subscriptions writes a log of
~186 MB; its commit took 0.39-0.44 s with the checkpoint and 0.17-0.18 s without
(docs/performance.md, eleventh session). Here the writers' connections checkpoint only as a
last resort (`FALLBACK_PAGES`), and this thread runs a PASSIVE checkpoint on a connection of
its own every `interval` seconds: PASSIVE never waits for, nor blocks, readers or the
writer, and sqlite3 releases the GIL while it copies.

Durability does not depend on checkpoints: a commit is durable once its log frames are
synced (`synchronous=FULL`). A checkpoint only moves committed pages into the database file
so the log can be reused.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Writers still checkpoint in their commit once the log holds this many pages (1 GiB at the
# default 4 KiB page), so it stays bounded if this thread cannot keep up or has stopped.
FALLBACK_PAGES = 262_144
INTERVAL_SECONDS = 0.25


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on `path` every `interval` seconds until
    `stop()`, which takes a last one so a stopped service leaves a short log behind."""

    def __init__(self, path: Path, interval: float = INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        # the last checkpoint's (busy, frames in the log, frames checkpointed), and how many
        self.last: tuple[int, int, int] | None = None
        self.rounds = 0
        self.errors = 0  # checkpoints that failed (each is tried again at the next interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        con: sqlite3.Connection | None = None
        failing = False
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                try:
                    # No database file yet: wait for the first writer to make it rather
                    # than create an empty one here.
                    if con is None and self.path.exists():
                        con = sqlite3.connect(self.path, isolation_level=None,
                                              check_same_thread=False)
                    if con is not None:
                        self._checkpoint(con)
                    if failing:
                        log.info("sqlite.checkpoint_recovered", path=str(self.path))
                    failing = False
                except sqlite3.Error as exc:
                    # Tried again next time; meanwhile the writers' fallback checkpoint
                    # keeps the log bounded. Said once per failing spell, not every 0.25 s.
                    self.errors += 1
                    if not failing:
                        log.warning("sqlite.checkpoint_failed", error=str(exc),
                                    path=str(self.path))
                    failing = True
                if stopping:
                    return
        finally:
            if con is not None:
                con.close()

    def _checkpoint(self, con: sqlite3.Connection) -> None:
        busy, frames, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.last = (busy, frames, done)
        self.rounds += 1

"""SQLite's WAL checkpoints run in `store.checkpoint.WalCheckpointer`'s thread, not inside
the writers' commits, and still keep the log from growing (real SQLite files)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from stockbell.service.ports import UnitOfWork
from stockbell.store.checkpoint import FALLBACK_PAGES, WalCheckpointer
from stockbell.store.database import SqlDatabase
from tests.support import sqlite_database

MB = 1_000_000


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQLite file of its own: the test measures its files' sizes."""
    with sqlite_database(str(tmp_path)) as url:
        yield url


def _paths(url: str) -> tuple[Path, Path]:
    db = Path(str(make_url(url).database))
    return db, db.with_name(db.name + "-wal")


async def _write(db: SqlDatabase, size: int) -> None:
    """One transaction that adds `size` bytes of rows (SQLite's default would checkpoint in
    the commit of anything over 1,000 pages, ~4 MB)."""

    async def work(uow: UnitOfWork) -> None:
        conn = uow.conn  # type: ignore[attr-defined]
        await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (blob BLOB)")
        rows = [(bytes(1000),)] * (size // 1000)
        await conn.exec_driver_sql("INSERT INTO filler VALUES (?)", rows)

    await db.run(work)


async def _write_and_wait(db: SqlDatabase, size: int) -> None:
    """`_write`, then wait (at most 10 s) for the thread's first complete checkpoint after it."""
    assert db.checkpointer is not None
    rounds = db.checkpointer.rounds
    await _write(db, size)
    for _ in range(200):
        last = db.checkpointer.last
        if db.checkpointer.rounds > rounds and last is not None and last[2] == last[1] > 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no complete checkpoint in 10 s: {db.checkpointer.last}")


async def test_a_commit_leaves_the_checkpoint_to_the_thread(url: str) -> None:
    db = SqlDatabase(url)
    try:
        assert db.checkpointer is not None
        db.checkpointer.stop()  # now only the commit itself could checkpoint
        pages = await db.run(lambda uow: uow.conn.exec_driver_sql(  # type: ignore[attr-defined]
            "PRAGMA wal_autocheckpoint"))
        assert pages.scalar_one() == FALLBACK_PAGES
        path, wal = _paths(url)
        before = path.stat().st_size
        await _write(db, 8 * MB)
        # The 8 MB went to the log only: the database file was not touched.
        assert path.stat().st_size == before
        assert wal.stat().st_size > 8 * MB
    finally:
        await db.dispose()


async def test_the_thread_checkpoints_and_the_log_does_not_grow(url: str) -> None:
    db = SqlDatabase(url)
    try:
        path, wal = _paths(url)
        for _ in range(6):
            await _write_and_wait(db, 2 * MB)
        # Every write was copied into the database file, and each one reused the log
        # from its start instead of appending: 12 MB written, the log stays at one write.
        assert path.stat().st_size > 12 * MB
        assert wal.stat().st_size < 4 * MB
    finally:
        await db.dispose()
    assert db.checkpointer is not None
    assert not db.checkpointer.running


def test_a_failing_checkpoint_is_tried_again_not_given_up(tmp_path: Path) -> None:
    """A checkpoint that fails (here: the path cannot be opened as a database) is logged and
    tried again at the next interval; the thread keeps running until it is stopped."""
    broken = tmp_path / "not-a-database.db"
    broken.mkdir()
    checkpointer = WalCheckpointer(broken, interval=0.01)
    try:
        for _ in range(500):
            if checkpointer.errors >= 3:
                break
            time.sleep(0.01)
        assert checkpointer.errors >= 3
        assert checkpointer.running
    finally:
        checkpointer.stop()
    assert not checkpointer.running

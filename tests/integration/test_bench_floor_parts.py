"""`python -m bench floorparts` drops the secondary indexes of a bench database and puts them
back between floors; these tests pin that the round trip restores the schema exactly (a
variant measured on a half-restored schema would compare nothing) and that the order of the
variants rotates."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
from bench import floor_parts
from bench.env import PG

from tests.support import postgres_database


def test_each_variant_is_set_up_and_put_back_as_migrated() -> None:
    async def go(name: str) -> None:
        conn = await asyncpg.connect(database=name, **PG)
        try:
            before = await floor_parts.definitions(conn)
            found = await floor_parts._secondary(conn)
            # the primary keys and the restock's crossing index are never dropped
            assert not {n for n in found if n.startswith("pk_")}
            assert "ix_subscriptions_crossing" not in found
            assert {"uq_events_id", "ix_events_tenant", "ix_deliveries_due",
                    "uq_subscriptions_id"} <= set(found)
            assert "DROP CONSTRAINT" in found["uq_events_id"][1]
            for label in floor_parts.VARIANTS:
                change, restore = floor_parts.plan(label, found, before)
                for sql in change:
                    await conn.execute(sql)
                changed = await floor_parts.definitions(conn)
                if label == floor_parts.AS_MIGRATED:
                    assert changed == before
                elif label == floor_parts.HEAP_ONLY:
                    # no index of subscriptions left that names the status
                    assert not [d for d in changed.values()
                                if "public.subscriptions " in d and "status" in d]
                    assert "ix_subscriptions_tenant" in changed
                else:
                    gone = {n for n, (table, _, _) in found.items()
                            if table in floor_parts.VARIANTS[label]}
                    assert gone
                    assert set(changed) == set(before) - gone
                for sql in restore:
                    await conn.execute(sql)
                assert await floor_parts.definitions(conn) == before, label
        finally:
            await conn.close()

    with postgres_database() as url:
        asyncio.run(go(urlsplit(url).path.lstrip("/")))


def test_each_variant_runs_first_in_some_round() -> None:
    labels = list(floor_parts.VARIANTS)
    orders = [floor_parts.rotated(labels, r) for r in range(len(labels))]
    assert all(sorted(o) == sorted(labels) for o in orders)
    assert {o[0] for o in orders} == set(labels)
    assert orders[0] == labels

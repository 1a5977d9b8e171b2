"""`reads`: what a point read, and a storefront's "notify me", cost beside the bare route
(not a bar of issue 5; outside `all`).

`ingest` prints one read for scale; this measures, in alternating turns with the bare route
(`bench.turns`), the point reads an integration makes (a location, an item, an item's
inventory in four statements, a subscription) and the write a storefront makes most, a new
subscription (its own transaction and commit, two events). The twenty-second session made
the item, inventory and subscription reads 1.6-2.5x faster and the new subscription
1.2-1.8x (docs/performance.md).
"""

from __future__ import annotations

import itertools

import uvloop

from bench.env import Env
from bench.report import Row, Table
from bench.turns import Route, counts, in_turns


def reads(db: str, quick: bool) -> Table:
    rounds, turn, warmup, conc = (2, 1.5, 0.5, 32) if quick else (4, 2.5, 0.5, 32)
    t = Table(f"reads ({db}{', quick' if quick else ''})")
    with Env(db) as env:
        env.start_serve()

        async def go() -> None:
            async with env.session(limit=conc) as s:
                skus, locs = await env.catalog(s, 100, 4)
                for sku in skus[:10]:
                    await env.call(s, "POST", "/v1/inventory/changes", {"changes": [
                        {"type": "count", "sku_code": sku, "location": loc, "quantity": "5"}
                        for loc in locs]})
                sub = await env.call(s, "POST", "/v1/subscriptions", {
                    "sku_code": skus[0], "location": locs[1], "threshold": "9",
                    "customer": {"email": "reader@example.com"}})
            async with env.lean_client(conc) as c:
                whoami = c.get_request("/v1/whoami")
                paths = {
                    "one location": [f"/v1/locations/{code}" for code in locs],
                    "one item": [f"/v1/items/{sku}" for sku in skus],
                    "an item's inventory": [f"/v1/inventory/{sku}" for sku in skus[:10]],
                    "one subscription": [f"/v1/subscriptions/{sub['id']}"],
                }

                def route(requests: list[bytes]) -> Route:
                    async def get(i: int) -> None:
                        await c.ok(requests[i % len(requests)])
                    return get

                async def bare(i: int) -> None:
                    await c.ok(whoami)

                emails = itertools.count()  # unique across turns: each a new subscription

                async def subscribe(i: int) -> None:
                    await c.ok(c.post_request("/v1/subscriptions", {
                        "sku_code": skus[i % 100],
                        "customer": {"email": f"shopper{next(emails)}@example.com"}}), 201)

                reads: dict[str, Route] = {"bare": bare, **{
                    name: route([c.get_request(p) for p in ps]) for name, ps in paths.items()}}
                serve = env.serve
                assert serve is not None
                pg = db == "postgres"
                # The reads first, then the writes, each phase in turns with the bare route of
                # its own: the writes leave PostgreSQL work behind them (autovacuum, the
                # checkpointer), which took a third of a core from reads in turns beside them.
                turns = await in_turns(reads, serve, pg, rounds, turn, warmup, conc)
                for name, ps in paths.items():
                    t.add(Row(f"GET {ps[0].rsplit('/', 1)[0]}/...: {name}", turns[name].rate,
                              "req/s", turns["bare"].rate, "bare GET /v1/whoami, same key"))
                writes = await in_turns({"bare": bare, "a new subscription": subscribe}, serve,
                                        pg, rounds, turn, warmup, conc)
                t.add(Row("POST /v1/subscriptions: a new subscription (customer email)",
                          writes["a new subscription"].rate, "req/s", writes["bare"].rate,
                          "bare GET /v1/whoami, same key, its own turns"))
                t.notes.append(f"{conc} keep-alive connections (bench/load.py); turns of "
                               f"{turn:g} s after {warmup:g} s of warm-up, {rounds} per route, "
                               f"alternating, the reads then the writes; requests: "
                               f"{counts(turns)}; {counts(writes)}")
                t.notes.append("100 items x 4 locations, counts on 10 items at every location, "
                               "one subscription scoped to a location (its read joins the item "
                               "and the location's code); each new subscription has its own "
                               "customer email, on one of the 100 items")
                t.notes.append("CPU (diagnostic): "
                               + "; ".join(a.cpu(name, pg) for name, a in turns.items())
                               + "; " + writes["a new subscription"].cpu("a new subscription",
                                                                          pg))

        uvloop.run(go())
    return t

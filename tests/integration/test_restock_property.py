"""The restock rule (DESIGN §1) against a small pure-Python reference model, on both databases.

Each example builds a fresh account (2 items, 3-4 locations, 1-2 markets) and drives a random
sequence of counts (some stale), adjustments, batches, subscribes, (de)activations,
cancellations, expiry and the expiry sweep through the real service layer. After every
operation the back_in_stock / subscription.expired events it produced, every subscription's
status and notify count, and the stock and availability per scope must equal the model's.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as hgiven
from hypothesis import strategies as st

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.errors import Conflict, InvalidInput, StockbellError
from stockbell.domain.events import BACK_IN_STOCK, SUBSCRIPTION_EXPIRED
from stockbell.service import accounts, catalog, inventory, subscriptions
from stockbell.service.clock import utcnow
from stockbell.service.events import list_events
from stockbell.service.inventory import ChangeInput
from stockbell.service.pagination import PageRequest, decode_cursor
from stockbell.service.ports import UnitOfWork
from stockbell.service.subscriptions import SubscriptionInput, SubscriptionPatch
from stockbell.store.database import SqlDatabase
from tests.support import postgres_database, sqlite_database

settings.register_profile(
    "stockbell-restock",
    max_examples=int(os.environ.get("STOCKBELL_RESTOCK_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

ITEMS = ("ITEM-A", "ITEM-B")
IN, SOLD, NONE = "IN_STOCK", "SOLD", "NONE"
WATCHED = (BACK_IN_STOCK, SUBSCRIPTION_EXPIRED)


# ------------------------------------------------------------------ operations (the strategy)


@dataclass(frozen=True)
class Change:
    kind: str  # "count" | "adjustment"
    item: int
    loc: int  # index, taken modulo the number of locations
    qty: Decimal
    state: str = IN  # counts
    src: str = NONE  # adjustments
    dst: str = IN
    age: int = 0  # seconds before the logical clock (counts): > 0 may be stale


@dataclass(frozen=True)
class Op:
    kind: str
    changes: tuple[Change, ...] = ()
    sub: int = 0  # index into the subscriptions created so far (modulo)
    item: int = 0
    scope: tuple[str, int] = ("all", 0)  # ("all" | "location" | "market", index)
    threshold: Decimal = Decimal(1)
    auto: bool = False
    expires_later: bool = False


@dataclass(frozen=True)
class Scenario:
    n_locations: int
    markets: tuple[tuple[int, ...], ...]
    ops: tuple[Op, ...]


quarters = st.integers(0, 20).map(lambda n: Decimal(n) / 4)  # 0 .. 5 by 0.25
counted_qty = st.one_of(
    quarters,
    st.integers(0, 5).map(Decimal),
    st.decimals(min_value=0, max_value=5, places=6, allow_nan=False, allow_infinity=False),
)
moved_qty = st.one_of(
    st.integers(1, 12).map(lambda n: Decimal(n) / 4),
    st.decimals(min_value=Decimal("0.000001"), max_value=3, places=6, allow_nan=False,
                allow_infinity=False),
)
thresholds = st.one_of(
    st.integers(1, 6).map(Decimal),
    st.integers(1, 24).map(lambda n: Decimal(n) / 4),
    st.decimals(min_value=Decimal("0.000001"), max_value=6, places=6, allow_nan=False,
                allow_infinity=False),
)
items = st.integers(0, len(ITEMS) - 1)
locs = st.integers(0, 3)

counts = st.builds(
    Change, kind=st.just("count"), item=items, loc=locs, qty=counted_qty,
    state=st.sampled_from([IN, IN, IN, SOLD]), age=st.sampled_from([0, 0, 0, 1, 3, 6]),
)
adjustments = st.sampled_from([(IN, SOLD), (SOLD, IN), (NONE, IN), (IN, NONE)]).flatmap(
    lambda pair: st.builds(Change, kind=st.just("adjustment"), item=items, loc=locs,
                           qty=moved_qty, src=st.just(pair[0]), dst=st.just(pair[1]))
)
changes = st.one_of(counts, adjustments)
scopes = st.tuples(st.sampled_from(["all", "location", "market"]), st.integers(0, 3))
subscribes = st.builds(Op, kind=st.just("subscribe"), item=items, scope=scopes,
                       threshold=thresholds, auto=st.booleans(),
                       expires_later=st.sampled_from([False, False, True]))
sub_ops = st.builds(
    Op,
    kind=st.sampled_from(["deactivate", "activate", "expire", "unexpire", "cancel"]),
    sub=st.integers(0, 50),
)

single = changes.map(lambda c: Op("apply", (c,)))
batch = st.lists(changes, min_size=2, max_size=5).map(lambda cs: Op("apply", tuple(cs)))
# weighted by repetition (one_of would not spread its draws evenly over the branches)
operations = st.sampled_from(
    [single, single, single, batch, batch, subscribes, subscribes, sub_ops, sub_ops,
     st.just(Op("sweep"))]
).flatmap(lambda strategy: strategy)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(3, 4))
    markets = draw(st.lists(
        st.sets(st.integers(0, n - 1), min_size=1, max_size=n).map(lambda s: tuple(sorted(s))),
        min_size=1, max_size=2,
    ))
    first = draw(st.lists(subscribes, min_size=1, max_size=4))
    ops = draw(st.lists(operations, min_size=6, max_size=25))
    return Scenario(n, tuple(markets), tuple(first + ops))


# ------------------------------------------------------------------ the reference model


@dataclass
class ModelSub:
    id: str
    item: int
    scope: str  # "*", "L<i>", "M<j>"
    threshold: Decimal
    auto: bool
    status: str = "active"
    expired: bool = False  # expires_at is in the past
    fired: int = 0


@dataclass
class Model:
    scopes: dict[str, frozenset[int]]  # scope -> locations summed
    qty: dict[tuple[int, int, str], Decimal] = field(default_factory=dict)
    counted_at: dict[tuple[int, int, str], datetime] = field(default_factory=dict)
    subs: list[ModelSub] = field(default_factory=list)

    def availability(self, item: int, scope: str) -> Decimal:
        return sum((self.qty.get((item, loc, IN), Decimal(0)) for loc in self.scopes[scope]),
                   Decimal(0))

    def apply(self, item: int, loc: int, c: Change, at: datetime,
              fired: list[tuple[Any, ...]]) -> bool:
        """Apply one change; append what fires; return whether it was applied."""
        before = {s: self.availability(item, s) for s in self.scopes}
        if c.kind == "count":
            key = (item, loc, c.state)
            newest = self.counted_at.get(key)
            if newest is not None and at < newest:
                return False  # stale: recorded, moves nothing
            self.counted_at[key] = at
            self.qty[key] = c.qty
        else:
            if c.src != NONE:
                self.qty[(item, loc, c.src)] = self.qty.get((item, loc, c.src), 0) - c.qty
            if c.dst != NONE:
                self.qty[(item, loc, c.dst)] = self.qty.get((item, loc, c.dst), 0) + c.qty
        after = {s: self.availability(item, s) for s in self.scopes}
        for sub in self.subs:
            if sub.item != item or sub.status != "active":
                continue
            a0, a1 = before[sub.scope], after[sub.scope]
            if not a0 < sub.threshold <= a1:
                continue
            if sub.expired:
                sub.status = "expired"
                fired.append((SUBSCRIPTION_EXPIRED, sub.id))
                continue
            sub.fired += 1
            if not sub.auto:
                sub.status = "notified"
            fired.append((BACK_IN_STOCK, sub.id, a0, a1, sub.threshold, sub.fired))
        return True


# ------------------------------------------------------------------ driving the real service


class Run:
    def __init__(self, db: SqlDatabase, scenario: Scenario) -> None:
        self.db = db
        self.sc = scenario
        self.n = scenario.n_locations
        self.loc_codes = [f"L{i}" for i in range(self.n)]
        self.market_codes = [f"M{j}" for j in range(len(scenario.markets))]
        scopes = {"*": frozenset(range(self.n))}
        scopes.update({f"L{i}": frozenset({i}) for i in range(self.n)})
        scopes.update({f"M{j}": frozenset(m) for j, m in enumerate(scenario.markets)})
        self.model = Model(scopes)
        self.base = utcnow() - timedelta(days=1)
        self.tick = 0
        self.last_event_pk: int | None = None
        self.tenant: Tenant
        self.log: list[str] = []  # what ran, for the failure message

    async def setup(self) -> None:
        name = f"restock-prop-{uuid.uuid4().hex[:12]}"

        async def work(uow: UnitOfWork) -> Tenant:
            account_id = await accounts.create_account(uow, name)
            tenant = Tenant(account_id, Mode.TEST)
            for sku in ITEMS:
                await catalog.upsert_item(uow, tenant, Item(sku_code=sku))
            for code in self.loc_codes:
                await catalog.upsert_location(uow, tenant, Location(code=code))
            for code, members in zip(self.market_codes, self.sc.markets, strict=True):
                await catalog.upsert_market(uow, tenant, Market(
                    code=code, location_codes=[self.loc_codes[i] for i in members]))
            return tenant

        self.tenant = await self.db.run(work)

    async def run(self) -> None:
        await self.setup()
        for step, op in enumerate(self.sc.ops):
            expected = await self.step(op)
            self.log.append(f"{step}: {op}")
            await self.check(expected, step, moved=op.kind == "apply")

    # -- one operation; returns the watched events the model expects from it

    async def step(self, op: Op) -> list[tuple[Any, ...]]:
        if op.kind == "apply":
            return await self.apply(op.changes)
        if op.kind == "subscribe":
            await self.subscribe(op)
            return []
        if op.kind == "sweep":
            return await self.sweep()
        if not self.model.subs:
            return []
        sub = self.model.subs[op.sub % len(self.model.subs)]
        await getattr(self, f"do_{op.kind}")(sub)
        return []

    async def apply(self, batch: tuple[Change, ...]) -> list[tuple[Any, ...]]:
        inputs: list[ChangeInput] = []
        fired: list[tuple[Any, ...]] = []
        applied = 0
        for c in batch:
            self.tick += 1
            at = self.base + timedelta(seconds=self.tick - c.age)
            loc = c.loc % self.n
            if c.kind == "count":
                inputs.append(ChangeInput("count", ITEMS[c.item], self.loc_codes[loc],
                                          str(c.qty), state=c.state, occurred_at=at))
            else:
                inputs.append(ChangeInput("adjustment", ITEMS[c.item], self.loc_codes[loc],
                                          str(c.qty), from_state=c.src, to_state=c.dst,
                                          occurred_at=at))
            applied += self.model.apply(c.item, loc, c, at, fired)
        status, body = await self.db.run(
            lambda uow: inventory.apply_changes(uow, self.tenant, inputs))
        assert status == 200
        assert body["applied"] == applied, (body, self.log)
        assert body["ignored"] == len(batch) - applied, (body, self.log)
        want = sum(f[0] == BACK_IN_STOCK for f in fired)
        assert body["notifications"] == want, (body, fired, self.log)
        return fired

    async def subscribe(self, op: Op) -> None:
        kind, idx = op.scope
        location = market = None
        if kind == "location":
            location = self.loc_codes[idx % self.n]
            scope = f"L{idx % self.n}"
        elif kind == "market":
            market = self.market_codes[idx % len(self.market_codes)]
            scope = market
        else:
            scope = "*"
        inp = SubscriptionInput(
            sku_code=ITEMS[op.item], location=location, market=market,
            threshold=str(op.threshold), auto_resubscribe=op.auto,
            expires_at=utcnow() + timedelta(days=1) if op.expires_later else None,
        )
        sub = await self.db.run(lambda uow: subscriptions.subscribe(uow, self.tenant, inp))
        assert sub.status.value == "active"
        self.model.subs.append(ModelSub(sub.id, op.item, scope, op.threshold, op.auto))

    async def expect(self, work: Any, error: type[StockbellError] | None) -> None:
        if error is None:
            await self.db.run(work)
        else:
            with pytest.raises(error):
                await self.db.run(work)

    async def do_deactivate(self, sub: ModelSub) -> None:
        refused = sub.status in ("cancelled", "expired")
        await self.expect(lambda uow: subscriptions.deactivate(uow, self.tenant, sub.id),
                          Conflict if refused else None)
        if not refused:
            sub.status = "inactive"

    async def do_activate(self, sub: ModelSub) -> None:
        refused = sub.status == "cancelled" or sub.expired
        await self.expect(lambda uow: subscriptions.activate(uow, self.tenant, sub.id),
                          Conflict if refused else None)
        if not refused:
            sub.status = "active"

    async def _set_expiry(self, sub: ModelSub, when: datetime | None) -> None:
        refused = sub.status == "cancelled"
        patch = SubscriptionPatch(expires_at=when)
        await self.expect(lambda uow: subscriptions.update(uow, self.tenant, sub.id, patch),
                          InvalidInput if refused else None)
        if not refused:
            sub.expired = when is not None

    async def do_expire(self, sub: ModelSub) -> None:
        await self._set_expiry(sub, utcnow() - timedelta(seconds=1))

    async def do_unexpire(self, sub: ModelSub) -> None:
        await self._set_expiry(sub, None)

    async def do_cancel(self, sub: ModelSub) -> None:
        await self.expect(lambda uow: subscriptions.cancel(uow, self.tenant, sub.id), None)
        sub.status = "cancelled"

    async def sweep(self) -> list[tuple[Any, ...]]:
        # expire_due is global (every account in the database) and bounded per call
        while await self.db.run(lambda uow: subscriptions.expire_due(uow, limit=500)) == 500:
            pass
        fired: list[tuple[Any, ...]] = []
        for sub in self.model.subs:
            if sub.expired and sub.status in ("active", "inactive", "notified"):
                sub.status = "expired"
                fired.append((SUBSCRIPTION_EXPIRED, sub.id))
        return fired

    # -- comparing the database with the model

    async def check(self, expected: list[tuple[Any, ...]], step: int, moved: bool) -> None:
        async def read(uow: UnitOfWork) -> tuple[list[Any], list[Any], list[Any]]:
            events: list[Any] = []
            after = self.last_event_pk
            while True:
                page = await list_events(uow, self.tenant, None, None,
                                         PageRequest(after, 200))
                events.extend(page.data)
                if page.next_cursor is None:
                    break
                after = decode_cursor(page.next_cursor)
            subs: list[Any] = []
            cursor: int | None = None
            while True:
                spage = await subscriptions.list_subscriptions(
                    uow, self.tenant, None, None, PageRequest(cursor, 200))
                subs.extend(spage.data)
                if spage.next_cursor is None:
                    break
                cursor = decode_cursor(spage.next_cursor)
            stock = [await inventory.inventory_of(uow, self.tenant, sku) for sku in ITEMS
                     if moved]
            return events, subs, stock

        events, subs, stock = await self.db.run(read)
        if events:
            self.last_event_pk = events[-1].pk
        got: list[tuple[Any, ...]] = []
        for e in events:
            if e.type == BACK_IN_STOCK:
                d = e.data
                got.append((BACK_IN_STOCK, d["subscription_id"],
                            Decimal(d["previous_availability"]), Decimal(d["availability"]),
                            Decimal(d["threshold"]), d["subscription"]["notify_count"]))
            elif e.type == SUBSCRIPTION_EXPIRED:
                got.append((SUBSCRIPTION_EXPIRED, e.data["subscription_id"]))
        where = f"after step {step}: {self.sc.ops[step]}\nran:\n" + "\n".join(self.log)
        assert Counter(got) == Counter(expected), f"events differ {where}"

        model_subs = {s.id: s for s in self.model.subs}
        assert {s.id for s in subs} == set(model_subs), where
        for s in subs:
            m = model_subs[s.id]
            assert (s.status.value, s.notify_count) == (m.status, m.fired), (s.id, where)

        for item, inv in enumerate(stock):
            scopes = {(a["type"], a["code"]): Decimal(a["availability"])
                      for a in inv["availability"]}
            for key, want in self._model_scopes(item).items():
                assert scopes.get(key, Decimal(0)) == want, (ITEMS[item], key, where)
            per_loc = {row["location"]: row["quantities"] for row in inv["locations"]}
            for i, code in enumerate(self.loc_codes):
                for state in (IN, SOLD):
                    want = self.model.qty.get((item, i, state), Decimal(0))
                    got_q = Decimal(per_loc.get(code, {}).get(state, "0"))
                    assert got_q == want, (ITEMS[item], code, state, where)

    def _model_scopes(self, item: int) -> dict[tuple[str, str | None], Decimal]:
        out: dict[tuple[str, str | None], Decimal] = {
            ("all", None): self.model.availability(item, "*")}
        for i, code in enumerate(self.loc_codes):
            out[("location", code)] = self.model.availability(item, f"L{i}")
        for code in self.market_codes:
            out[("market", code)] = self.model.availability(item, code)
        return out


async def run_scenario(url: str, scenario: Scenario) -> None:
    db = SqlDatabase(url, pool_size=1)
    try:
        await Run(db, scenario).run()
    finally:
        await db.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def model_db(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own: no server (and so no background expiry sweep) shares it, so
    the only sweeps are the ones the scenario performs."""
    if request.param == "sqlite":
        with sqlite_database(str(tmp_path_factory.mktemp("model"))) as url:
            yield url
    else:
        with postgres_database() as url:
            yield url


@settings(settings.get_profile("stockbell-restock"))
@hgiven(scenario=scenarios())
def test_restock_rule_matches_reference_model(model_db: str, scenario: Scenario) -> None:
    asyncio.run(run_scenario(model_db, scenario))


def test_batch_evaluates_each_change_on_its_own(model_db: str) -> None:
    """The example from DESIGN: [count 0, count 5] in one batch fires a T=3 subscription once,
    and an auto-resubscribing one fires once per upward crossing within the batch."""
    later = [Op("subscribe", threshold=Decimal(3)),
             Op("subscribe", threshold=Decimal(3), auto=True)]
    up = Change("count", 0, 0, Decimal(5))
    down = Change("count", 0, 0, Decimal(0))
    ops = (Op("apply", (up,)), *later, Op("apply", (down, up)),
           Op("apply", (down, up, down, up)))
    asyncio.run(run_scenario(model_db, Scenario(3, ((0, 1),), ops)))

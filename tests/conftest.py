"""Fixtures: every integration test runs on a real SQLite file and on the real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from tests.support import Server, Tenant, postgres_database, sqlite_database

# In-process servers log from info up, as `stockbell serve` does by default
# (STOCKBELL_LOG_LEVEL); structlog unconfigured prints every debug line (a delivery attempt
# each) into the test run's output.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """One database per backend per test session (PostgreSQL: a uniquely named one)."""
    if request.param == "sqlite":
        with sqlite_database(str(tmp_path_factory.mktemp("sqlite"))) as url:
            yield url
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def server(db_url: str) -> Iterator[Server]:
    srv = Server(db_url).start()
    yield srv
    srv.stop()


@pytest.fixture
def tenant(server: Server) -> Tenant:
    """A fresh account with a secret test-mode key: tests never see each other's rows."""
    return server.tenant()


@pytest.fixture
def seeded(tenant: Tenant) -> Tenant:
    """A tenant with item SKU-1, locations L1..L3 and market EU = {L1, L2}."""
    assert tenant.put("/v1/items/SKU-1", json={"title": "Boot"}).status_code == 200
    for code in ("L1", "L2", "L3"):
        assert tenant.put(f"/v1/locations/{code}", json={}).status_code == 200
    assert tenant.put("/v1/markets/EU", json={"locations": ["L1", "L2"]}).status_code == 200
    return tenant

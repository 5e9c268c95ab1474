"""The event store on PostgreSQL: the same code as on SQLite, against a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.store.db import create_engine
from service.store.events import EventStore
from service.store.schema import EventPatch
from tests.pg import PrivatePostgres
from tests.unit.store.test_events import T0, ids, patch, review

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """``LOOKOUT_TEST_PG_URL``, else a private cluster (never skipped: see tests/pg.py)."""
    url = os.environ.get("LOOKOUT_TEST_PG_URL")
    if url:
        yield url
        return
    server = PrivatePostgres()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


async def test_same_store_on_postgresql(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        from service.store.schema import TABLES

        async with engine.begin() as conn:
            await conn.run_sync(lambda c: [t.drop(c, checkfirst=True) for t in reversed(TABLES)])
        store = EventStore(engine, zone_probe=2)
        await store.start()
        for i in range(2000):
            store.submit(patch(f"pg{i}", T0 + i, ["a", "b"][i % 2], zones=(f"z{i % 3}",)))
        store.submit(patch("pg1", T0 + 1, "b", sub_label="Zoë", zones=("z9",)))
        store.submit(
            EventPatch(id="pg1", start_time=T0, updated_at=T0, face="Zoë", description="d")
        )
        store.submit_review(review("r", "a", T0, None))
        await store.flush()
        assert await store.count() == 2000
        assert await ids(store, cameras=["a"], limit=2) == ["pg1998", "pg1996"]
        assert await ids(store, sub_labels=["zoë"]) == ["pg1"]
        assert await ids(store, zones=["z9"]) == ["pg1"]
        assert len(await store.search(zones=["z0", "z1"], limit=100)) == 100
        assert await ids(store, cameras=[]) == []
        assert [r.id for r in await store.reviews(after=T0 - 1)] == ["r"]
        row = await store.get("pg1")
        assert row is not None and row.zones == ("z1", "z9") and row.description == "d"
        assert (await store.purge(0)).events == 2000
        await store.close()
    finally:
        await engine.dispose()

"""The event & review store: batching, coalescing, retries, queries, retention."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.frigate.mirror import FrigateMirror
from service.mqtt.topics import TopicMap
from service.settings import FrigateSettings
from service.store.db import create_engine
from service.store.events import EventStore
from service.store.schema import EventPatch, ReviewPatch
from tests.frigate_replay import tracked_object
from tests.unit.store.conftest import DAY, T0, Clock


def patch(
    oid: str,
    start: float,
    camera: str = "front_door",
    label: str = "person",
    zones: tuple[str, ...] = (),
    **kw: Any,
) -> EventPatch:
    return EventPatch(
        id=oid,
        start_time=start,
        updated_at=start,
        full=True,
        camera=camera,
        label=label,
        zones=zones,
        **kw,
    )


def event_message(oid: str, kind: str = "new", **kw: Any) -> bytes:
    after = tracked_object(
        oid, kw.pop("camera", "front_door"), kw.pop("label", "person"), T0, T0 + 1, **kw
    )
    return json.dumps({"type": kind, "before": after, "after": after}).encode()


# -- ingest ------------------------------------------------------------------------


async def test_burst_of_10000_event_messages_is_stored_exactly(store: EventStore) -> None:
    mirror = FrigateMirror(FrigateSettings(), TopicMap(), store)
    writer = asyncio.create_task(store.run(), name="test-event-writer")
    cameras = ["front_door", "driveway", "backyard", "garage"]
    for i in range(10_000):
        oid = f"{T0 + i:.6f}-{i:06x}"
        mirror.handle("frigate/events", event_message(oid, camera=cameras[i % 4]), False)
    assert store.stats()["pending"] > 0  # nothing was written on the message path
    await store.flush()
    assert await store.count() == 10_000
    stats = store.stats()
    assert stats["dropped_overflow"] == 0
    assert stats["accepted"] == 10_000
    assert stats["pending"] == 0
    assert len(await store.search(cameras=["garage"], limit=100)) == 100
    await store.close()
    async with asyncio.timeout(5):
        await writer  # close() ends the writer task


async def test_updates_of_one_object_coalesce(store: EventStore) -> None:
    oid = f"{T0:.6f}-co4l35"
    store.submit(patch(oid, T0, zones=("walkway",), top_score=0.7))
    store.submit(
        patch(oid, T0, zones=("porch",), top_score=0.9, sub_label="Alice", sub_label_score=0.8)
    )
    store.submit(patch(oid, T0, zones=("porch",), end_time=T0 + 30, has_clip=True))
    assert store.stats()["coalesced"] == 2
    await store.flush()
    row = await store.get(oid)
    assert row is not None
    assert row.zones == ("walkway", "porch")
    assert (row.top_score, row.sub_label, row.sub_label_score) == (0.9, "Alice", 0.8)
    assert (row.end_time, row.has_clip) == (T0 + 30, True)
    # Across batches too: a late, stale update with fewer zones and no sub label keeps them.
    store.submit(patch(oid, T0, zones=("porch",), description=None))
    await store.flush()
    row = await store.get(oid)
    assert row is not None and row.zones == ("walkway", "porch") and row.sub_label == "Alice"
    assert await store.search(zones=["walkway"]) == [row]


async def test_update_before_its_event_is_kept(store: EventStore) -> None:
    oid = f"{T0:.6f}-e4rly0"
    face = EventPatch(id=oid, start_time=T0, updated_at=T0, camera="front_door", face="Bob",
                      sub_label="Bob", sub_label_score=0.9)  # fmt: skip
    store.submit(face)
    await store.flush()
    assert await store.count() == 1
    assert await store.get(oid) is None  # a fragment is not an event yet
    assert await store.search() == []
    store.submit(EventPatch(id=oid, start_time=T0, updated_at=T0, description="A man in blue."))
    await store.flush()
    store.submit(patch(oid, T0 + 0.5, zones=("porch",)))
    await store.flush()
    row = await store.get(oid)
    assert row is not None
    assert (row.face, row.sub_label, row.description, row.start_time) == (
        "Bob",
        "Bob",
        "A man in blue.",
        T0 + 0.5,
    )


async def test_sub_label_precedence(store: EventStore) -> None:
    named, unnamed = f"{T0:.6f}-n4med0", f"{T0:.6f}-unn4m3"
    store.submit(patch(named, T0, sub_label="Alice", sub_label_score=0.9))
    store.submit(patch(unnamed, T0))
    await store.flush()
    for oid in (named, unnamed):
        store.submit(EventPatch(id=oid, start_time=T0, updated_at=T0, face="Bob", sub_label="Bob",
                                sub_label_score=0.6))  # fmt: skip
    await store.flush()
    a, b = await store.get(named), await store.get(unnamed)
    assert a is not None and (a.sub_label, a.sub_label_score, a.face) == ("Alice", 0.9, "Bob")
    assert b is not None and (b.sub_label, b.sub_label_score, b.face) == ("Bob", 0.6, "Bob")


async def test_full_buffer_refuses_new_ids_but_coalesces(engine: AsyncEngine) -> None:
    store = EventStore(engine, max_pending=3)
    await store.start()
    assert all(store.submit(patch(f"{T0:.6f}-bu{i:04x}", T0 + i)) for i in range(3))
    assert store.submit(patch(f"{T0:.6f}-ov3rfl", T0)) is False
    assert store.submit(patch(f"{T0:.6f}-bu0000", T0, end_time=T0 + 5)) is True
    assert store.stats()["dropped_overflow"] == 1
    await store.close()
    assert await store.count() == 3


async def test_history_survives_a_restart(db_path: Path) -> None:
    first = create_engine(f"sqlite:///{db_path}")
    store = EventStore(first)
    await store.start()
    for i in range(50):
        store.submit(patch(f"{T0 + i:.6f}-r3st{i:02x}", T0 + i, zones=("porch",)))
    store.submit_review(ReviewPatch(id="r1", camera="front_door", start_time=T0, severity="alert",
                                    updated_at=T0))  # fmt: skip
    await store.close()
    await first.dispose()
    second = create_engine(f"sqlite:///{db_path}")
    try:
        reopened = EventStore(second)
        await reopened.start()
        assert await reopened.count() == 50
        assert await reopened.count_reviews() == 1
        rows = await reopened.search(zones=["porch"], limit=3)
        assert [r.start_time for r in rows] == [T0 + 49, T0 + 48, T0 + 47]
    finally:
        await second.dispose()


# -- failures ------------------------------------------------------------------------


@pytest.fixture
async def impatient_engine(db_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine that gives up on a locked database after 20 ms instead of 10 s."""
    eng = create_engine(f"sqlite:///{db_path}")

    @sa.event.listens_for(eng.sync_engine, "connect")
    def _short_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=20")
        cursor.close()

    yield eng
    await eng.dispose()


async def test_locked_database_is_retried_and_nothing_is_lost(
    impatient_engine: AsyncEngine, db_path: Path
) -> None:
    failed = asyncio.Event()
    errors: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        failed.set()

    store = EventStore(
        impatient_engine, on_write_error=on_error, retry_initial_s=0.001, retry_max_s=0.01
    )
    await store.start()
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        writer = asyncio.create_task(store.run(), name="test-event-writer")
        for i in range(500):
            store.submit(patch(f"{T0 + i:.6f}-l0ck{i:03x}", T0 + i))
        async with asyncio.timeout(10):
            await failed.wait()
        # More arrives while the batch is failing: updates of ids in it, and new ids.
        store.submit(patch(f"{T0:.6f}-l0ck000", T0, end_time=T0 + 9))
        for i in range(500, 600):
            store.submit(patch(f"{T0 + i:.6f}-l0ck{i:03x}", T0 + i))
        with pytest.raises(TimeoutError):
            await store.flush(timeout=0.05)
        assert store.stats()["pending"] == 600
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.flush()
    assert await store.count() == 600
    row = await store.get(f"{T0:.6f}-l0ck000")
    assert row is not None and row.end_time == T0 + 9
    stats = store.stats()
    assert stats["write_errors"] >= 1 and stats["rows_rejected"] == 0
    assert "locked" in str(errors[0])
    await store.close()
    async with asyncio.timeout(5):
        await writer


async def test_a_bad_row_is_isolated_and_the_rest_written(store: EventStore) -> None:
    good = [patch(f"{T0 + i:.6f}-g00d{i:02x}", T0 + i) for i in range(5)]
    for p in good[:2]:
        store.submit(p)
    store.submit(patch(f"{T0:.6f}-b4d000", T0, description="\ud800 lone surrogate"))
    for p in good[2:]:
        store.submit(p)
    await store.flush()
    assert await store.count() == 5
    assert store.stats()["rows_rejected"] == 1


# -- search ----------------------------------------------------------------------------


@pytest.fixture
async def history(engine: AsyncEngine) -> AsyncIterator[EventStore]:
    store = EventStore(engine, zone_probe=3)
    await store.start()
    rows = [
        patch("e1", T0 + 1, "front_door", "person", ("walkway", "porch"), sub_label="Alice"),
        patch("e2", T0 + 2, "driveway", "car", ("parking",), sub_label="Bob's Car", plate="ABC123"),
        patch("e3", T0 + 3, "backyard", "dog", ("lawn",)),
        patch("e4", T0 + 4, "front_door", "person", ("porch",), sub_label="alice"),
        patch("e5", T0 + 5, "front_door", "package", ()),
        patch("e6", T0 + 6, "driveway", "person", ("driveway_entrance",)),
        patch("e7", T0 + 7, "backyard", "cat", ("patio", "lawn")),
    ]
    for row in rows:
        store.submit(row)
    store.submit(EventPatch(id="fragment", start_time=T0 + 8, updated_at=T0, description="x"))
    await store.flush()
    yield store
    await store.close()


async def ids(store: EventStore, **filters: Any) -> list[str]:
    return [row.id for row in await store.search(**filters)]


async def test_search_newest_first_without_filters(history: EventStore) -> None:
    assert await ids(history) == ["e7", "e6", "e5", "e4", "e3", "e2", "e1"]
    assert [r.id for r in await history.recent(2)] == ["e7", "e6"]


async def test_search_cameras_none_is_any_and_empty_is_nothing(history: EventStore) -> None:
    assert await ids(history, cameras=["driveway", "backyard"]) == ["e7", "e6", "e3", "e2"]
    assert await ids(history, cameras=[]) == []
    assert await ids(history, cameras=["attic"]) == []
    assert await ids(history, labels=[]) == []
    assert await ids(history, zones=[]) == []
    assert await ids(history, sub_labels=[]) == []
    assert await ids(history, cameras="driveway") == ["e6", "e2"]  # a string is one camera


async def test_search_labels_and_sub_labels(history: EventStore) -> None:
    assert await ids(history, labels=["person"]) == ["e6", "e4", "e1"]
    assert await ids(history, labels=["person", "dog"], cameras=["front_door", "backyard"]) == [
        "e4",
        "e3",
        "e1",
    ]
    assert await ids(history, sub_labels=["ALICE"]) == ["e4", "e1"]
    assert await ids(history, sub_labels=["bob's car", "nobody"]) == ["e2"]


@pytest.mark.parametrize("probe", [1, 3, 1000])
async def test_search_zones_any_of_in_both_query_shapes(
    engine: AsyncEngine, history: EventStore, probe: int
) -> None:
    store = EventStore(engine, zone_probe=probe)
    assert await ids(store, zones=["porch"]) == ["e4", "e1"]
    assert await ids(store, zones=["lawn", "parking"]) == ["e7", "e3", "e2"]
    assert await ids(store, zones=["lawn"], labels=["cat"]) == ["e7"]
    assert await ids(store, zones=["porch"], after=T0 + 2) == ["e4"]
    assert await ids(store, zones=["Porch"]) == []  # zone ids are exact
    assert await ids(store, zones=["nowhere"]) == []


async def test_search_time_bounds_are_strict(history: EventStore) -> None:
    assert await ids(history, after=T0 + 2, before=T0 + 5) == ["e4", "e3"]
    assert await ids(history, after=T0 + 7) == []
    assert await ids(history, before=T0 + 1) == []


async def test_search_limit_is_clamped(engine: AsyncEngine) -> None:
    store = EventStore(engine)
    await store.start()
    for i in range(150):
        store.submit(patch(f"{T0 + i:.6f}-lim{i:03x}", T0 + i))
    await store.flush()
    assert len(await store.search(limit=0)) == 1
    assert len(await store.search(limit=-5)) == 1
    assert len(await store.search(limit=1000)) == 100
    rows = await store.search(limit=30)
    assert [r.start_time for r in rows] == sorted((r.start_time for r in rows), reverse=True)
    await store.close()


async def test_typical_searches_use_indexes(engine: AsyncEngine, history: EventStore) -> None:
    statements: list[tuple[str, Any]] = []

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT EVENTS.ID"):
            statements.append((statement, params))

    await history.search(cameras=["front_door"], after=T0)
    await history.search(labels=["person"], cameras=["front_door", "driveway"])
    await history.search(sub_labels=["alice"])
    await history.search(after=T0, before=T0 + 5)
    await history.search(zones=["porch"])
    sa.event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert len(statements) == 5
    async with engine.connect() as conn:
        for statement, params in statements:
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            details = " | ".join(str(row[-1]) for row in plan)
            assert "USING INDEX" in details or "USING COVERING INDEX" in details, details
            assert "SCAN events\n" not in details + "\n" and not details.endswith("SCAN events"), (
                details
            )


# -- reviews ---------------------------------------------------------------------------


def review(
    rid: str, camera: str, start: float, end: float | None, severity: str = "alert"
) -> ReviewPatch:
    return ReviewPatch(id=rid, camera=camera, start_time=start, end_time=end, severity=severity,
                       updated_at=start, objects=("person",))  # fmt: skip


async def test_reviews_overlapping_a_window(store: EventStore) -> None:
    for r in (
        review("before", "front_door", T0 - 500, T0 - 100),
        review("straddles", "front_door", T0 - 50, T0 + 50, "detection"),
        review("inside", "driveway", T0 + 100, T0 + 200),
        review("open", "driveway", T0 + 300, None),
        review("abandoned", "backyard", T0 - 3 * DAY, None),
        review("after", "front_door", T0 + 2000, T0 + 2100),
    ):
        store.submit_review(r)
    await store.flush()

    async def rids(**kw: Any) -> list[str]:
        return [r.id for r in await store.reviews(**kw)]

    assert await rids(after=T0, before=T0 + 1000) == ["straddles", "inside", "open"]
    assert await rids(after=T0, before=T0 + 1000, severity="alert") == ["inside", "open"]
    assert await rids(after=T0, before=T0 + 1000, cameras=["front_door"]) == ["straddles"]
    assert await rids(after=T0, before=T0 + 1000, cameras=[]) == []
    assert await rids(after=T0, before=T0 + 1000, limit=1) == ["straddles"]
    assert len(await rids()) == 6
    # A segment longer than the open-review horizon still overlaps (its span is tracked)...
    store.submit_review(review("marathon", "garage", T0 - 3 * DAY, T0 + 10))
    await store.flush()
    assert await rids(after=T0, before=T0 + 1000) == ["marathon", "straddles", "inside", "open"]


async def test_review_span_is_known_after_a_restart(engine: AsyncEngine) -> None:
    first = EventStore(engine)
    await first.start()
    first.submit_review(review("marathon", "garage", T0 - 3 * DAY, T0 + 10))
    await first.close()
    second = EventStore(engine)
    await second.start()
    assert [r.id for r in await second.reviews(after=T0, before=T0 + 5)] == ["marathon"]


async def test_review_genai_metadata_is_kept_across_updates(store: EventStore) -> None:
    store.submit_review(review("r", "front_door", T0, None, "detection"))
    await store.flush()
    genai = review("r", "front_door", T0, T0 + 60)
    genai.title, genai.summary, genai.threat_level = "Delivery", "A courier leaves a box.", 1
    store.submit_review(genai)
    await store.flush()
    store.submit_review(review("r", "front_door", T0, T0 + 60))  # a later plain update
    await store.flush()
    (row,) = await store.reviews()
    assert (row.severity, row.title, row.summary, row.threat_level) == (
        "alert",
        "Delivery",
        "A courier leaves a box.",
        1,
    )
    assert row.to_dict()["objects"] == ["person"]


# -- retention -------------------------------------------------------------------------


async def test_purge_removes_old_events_zones_and_reviews(engine: AsyncEngine) -> None:
    clock = Clock(T0 + 40 * DAY)
    store = EventStore(engine, clock=clock)
    await store.start()
    for i in range(12):
        store.submit(patch(f"old{i}", T0 + i, zones=("porch",)))  # 40 days old
    store.submit(patch("recent", T0 + 35 * DAY, zones=("porch",)))
    store.submit_review(review("old-review", "front_door", T0, T0 + 5))
    store.submit_review(review("new-review", "front_door", T0 + 35 * DAY, None))
    await store.flush()
    purged = await store.purge(30)
    assert (purged.events, purged.reviews) == (12, 1)
    assert await store.count() == 1
    assert [r.id for r in await store.search(zones=["porch"])] == ["recent"]
    async with engine.connect() as conn:
        zone_rows = (await conn.exec_driver_sql("SELECT count(*) FROM event_zones")).scalar_one()
    assert zone_rows == 1
    assert [r.id for r in await store.reviews()] == ["new-review"]
    assert await store.purge(30) == (0, 0)
    await store.close()


async def test_retention_task_runs_until_close(engine: AsyncEngine) -> None:
    store = EventStore(engine, clock=Clock(T0 + 40 * DAY))
    await store.start()
    store.submit(patch("old", T0))
    await store.flush()
    task = asyncio.create_task(store.run_retention(30, interval_s=3600), name="test-retention")
    await store.close()  # the task makes its first pass, then sees the close and ends
    async with asyncio.timeout(5):
        await task
    assert await store.count() == 0

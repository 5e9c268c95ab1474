"""Ends lookout makes up when Frigate sends none, and how Frigate's own word replaces them."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from service.store.ends import NOT_REPORTED, WENT_AWAY
from service.store.events import EventStore
from service.store.schema import EventPatch
from tests.unit.store.test_events import T0, patch, review


async def test_frigate_going_away_ends_open_rows_at_that_time(store: EventStore) -> None:
    store.submit(patch("open", T0))
    store.submit(patch("done", T0, end_time=T0 + 5))
    store.submit_review(review("r-open", "front_door", T0, None))
    await store.flush()
    ended = await store.end_open(at=T0 + 60)
    assert (ended.events, ended.reviews) == (1, 1)
    row = await store.get("open")
    assert row is not None and row.end_time == T0 + 60 and row.end_reason == WENT_AWAY
    done = await store.get("done")
    assert done is not None and done.end_time == T0 + 5 and done.end_reason is None
    (r,) = await store.reviews(after=T0 - 1, before=T0 + 100)
    assert r.end_time == T0 + 60 and r.end_reason == WENT_AWAY


async def test_unknown_time_uses_the_last_update(store: EventStore) -> None:
    store.submit(dataclasses.replace(patch("open", T0), updated_at=T0 + 42))
    await store.flush()
    await store.end_open(at=None)
    row = await store.get("open")
    assert row is not None and row.end_time == T0 + 42


async def test_frigates_word_replaces_an_end_lookout_made_up(store: EventStore) -> None:
    store.submit(patch("car", T0))
    await store.flush()
    await store.end_open(at=T0 + 60)
    # A later message of Frigate's about it says it is still open: it was not over.
    store.submit(dataclasses.replace(patch("car", T0), updated_at=T0 + 70))
    await store.flush()
    row = await store.get("car")
    assert row is not None and row.end_time is None and row.end_reason is None
    # A face/plate update (not Frigate's event itself) changes no end.
    await store.end_open(at=T0 + 80)
    store.submit(EventPatch(id="car", start_time=T0, updated_at=T0 + 90, plate="AB123"))
    await store.flush()
    row = await store.get("car")
    assert row is not None and row.end_time == T0 + 80 and row.plate == "AB123"
    # Frigate's history API later gives the true end.
    store.submit(dataclasses.replace(patch("car", T0), end_time=T0 + 75, updated_at=T0 + 95))
    await store.flush()
    row = await store.get("car")
    assert row is not None and row.end_time == T0 + 75 and row.end_reason is None


async def test_quiet_events_and_reviews_end(store: EventStore) -> None:
    store.submit(dataclasses.replace(patch("quiet", T0), updated_at=T0 + 10))
    store.submit(dataclasses.replace(patch("busy", T0), updated_at=T0 + 500))
    store.submit_review(
        dataclasses.replace(review("r1", "front_door", T0, None), detections=("quiet",))
    )
    store.submit_review(
        dataclasses.replace(review("r2", "front_door", T0, None), detections=("busy",))
    )
    await store.flush()
    ended = await store.end_quiet(cutoff=T0 + 100)
    # r2 is quiet too, but its object "busy" is still open.
    assert (ended.events, ended.reviews) == (1, 1)
    quiet = await store.get("quiet")
    assert quiet is not None and quiet.end_time == T0 + 10 and quiet.end_reason == NOT_REPORTED
    by_id = {r.id: r for r in await store.reviews(after=T0 - 1, before=T0 + 1)}
    assert by_id["r1"].end_time == T0 + 10 and by_id["r2"].end_time is None


async def test_a_cleared_sub_label_is_cleared(store: EventStore) -> None:
    store.submit(patch("p", T0, sub_label="Bob", sub_label_score=0.9))
    await store.flush()
    store.submit(dataclasses.replace(patch("p", T0), sub_label_cleared=True))
    await store.flush()
    row = await store.get("p")
    assert row is not None and row.sub_label is None and row.sub_label_score is None


async def test_an_old_database_gets_the_new_columns(tmp_path: Path) -> None:
    from service.store.db import create_engine

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the events table as the first release made it
        conn.execute(
            "CREATE TABLE events (id VARCHAR(128) PRIMARY KEY, camera VARCHAR(64), "
            "label VARCHAR(64), sub_label VARCHAR(128), sub_label_score FLOAT, zones JSON, "
            "start_time FLOAT NOT NULL, end_time FLOAT, top_score FLOAT, has_clip BOOLEAN, "
            "has_snapshot BOOLEAN, description TEXT, plate VARCHAR(128), face VARCHAR(128), "
            "updated_at FLOAT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO events (id, camera, label, start_time, updated_at) "
            "VALUES ('old', 'porch', 'cat', 1, 1)"
        )
    engine = create_engine(f"sqlite:///{db}")
    try:
        events = EventStore(engine)
        await events.start()
        row = await events.get("old")
        assert row is not None and row.face_score is None and row.end_reason is None
        await events.close()
    finally:
        await engine.dispose()

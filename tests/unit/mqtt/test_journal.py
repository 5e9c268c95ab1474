"""The request journal: exactly-once bookkeeping on SQLite, in memory and on disk."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from service.mqtt.journal import Journal, JournalEntry, requests_table
from service.store.db import async_url, create_engine, create_tables, is_sqlite


def entry(
    request_id: str = "r1",
    user: str = "alice",
    received_at: float | None = None,
    **overrides: object,
) -> JournalEntry:
    fields: dict[str, object] = {
        "user": user,
        "id": request_id,
        "kind": "health",
        "topic": f"lookout/{user}/health",
        "payload": b'{"id":"' + request_id.encode() + b'"}',
        "reply_topic": f"lookout/{user}/reply/{request_id}",
        "correlation_data": None,
        "received_at": time.time() if received_at is None else received_at,
    }
    fields.update(overrides)
    return JournalEntry(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def journal() -> AsyncIterator[Journal]:
    engine = create_engine("sqlite:///:memory:")
    await create_tables(engine)
    yield Journal(engine)
    await engine.dispose()


async def test_begin_records_and_a_second_begin_is_a_duplicate(journal):
    first = entry()
    assert await journal.begin(first) is True
    assert await journal.begin(first) is False
    # A redelivery is the same (user, id) whatever else it carries.
    assert await journal.begin(entry(payload=b"{}", kind="chat")) is False
    assert await journal.unfinished() == [first]


async def test_the_same_id_from_another_user_is_another_request(journal):
    assert await journal.begin(entry("same", user="alice")) is True
    assert await journal.begin(entry("same", user="bob")) is True
    assert {(e.user, e.id) for e in await journal.unfinished()} == {
        ("alice", "same"),
        ("bob", "same"),
    }


async def test_finish_removes_a_request_from_unfinished_and_stays_a_duplicate(journal):
    await journal.begin(entry("a"))
    await journal.begin(entry("b"))
    await journal.finish("alice", "a", "done")
    assert [e.id for e in await journal.unfinished()] == ["b"]
    assert await journal.begin(entry("a")) is False
    async with journal._engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(requests_table.c.outcome, requests_table.c.finished_at).where(
                    requests_table.c.id == "a"
                )
            )
        ).one()
    assert row.outcome == "done" and row.finished_at is not None


async def test_finish_of_an_unknown_request_is_harmless(journal):
    await journal.finish("nobody", "nothing", "error")
    assert await journal.unfinished() == []


async def test_unfinished_is_oldest_first_whatever_the_insert_order(journal):
    await journal.begin(entry("late", received_at=300.0))
    await journal.begin(entry("early", received_at=100.0))
    await journal.begin(entry("middle", received_at=200.0))
    assert [e.id for e in await journal.unfinished()] == ["early", "middle", "late"]


async def test_every_field_round_trips(journal):
    original = entry(
        "rt",
        user="ha",
        kind="chat/cancel",
        topic="home/lookout/ha/chat/cancel",
        payload=b"\x00\xff binary \xfe",
        reply_topic="ha/answers",
        correlation_data=b"\x01corr\x00",
        received_at=1_700_000_000.125,
    )
    await journal.begin(original)
    (back,) = await journal.unfinished()
    assert back == original
    assert isinstance(back.payload, bytes) and isinstance(back.correlation_data, bytes)


async def test_purge_forgets_only_old_finished_requests(journal):
    now = time.time()
    await journal.begin(entry("old-done", received_at=now - 1000))
    await journal.begin(entry("old-open", received_at=now - 1000))
    await journal.begin(entry("new-done", received_at=now))
    await journal.finish("alice", "old-done", "done")
    await journal.finish("alice", "new-done", "done")
    assert await journal.purge(older_than_s=500) == 1
    # The purged id is forgotten, so it would run again; the others are still known.
    assert await journal.begin(entry("old-done")) is True
    assert await journal.begin(entry("new-done")) is False
    assert {e.id for e in await journal.unfinished()} == {"old-open", "old-done"}
    assert await journal.purge(older_than_s=500) == 0


async def test_a_file_journal_survives_reopening(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'nested' / 'lookout.db'}"
    engine = create_engine(url)  # makes the missing folder
    await create_tables(engine)
    journal = Journal(engine)
    await journal.begin(entry("finished", received_at=1.0))
    await journal.begin(entry("interrupted", received_at=2.0, correlation_data=b"c"))
    await journal.finish("alice", "finished", "done")
    await engine.dispose()  # as a crash or restart would leave it

    engine = create_engine(url)
    await create_tables(engine)  # idempotent on an existing file
    try:
        reopened = Journal(engine)
        (pending,) = await reopened.unfinished()
        assert pending.id == "interrupted" and pending.correlation_data == b"c"
        assert await reopened.begin(entry("finished")) is False
        assert await reopened.begin(entry("interrupted")) is False
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "driver", "database", "password"),
    [
        ("sqlite:///data/x.db", "sqlite+aiosqlite", "data/x.db", None),
        ("sqlite:///:memory:", "sqlite+aiosqlite", ":memory:", None),
        ("sqlite:////tmp/a b/c%.db", "sqlite+aiosqlite", "/tmp/a b/c%.db", None),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite", "x.db", None),
        ("postgresql://u:p%40ss@db:5432/lookout", "postgresql+asyncpg", "lookout", "p@ss"),
        ("postgres://u@db/lookout", "postgresql+asyncpg", "lookout", None),
    ],
)
def test_async_url_maps_user_urls_to_async_drivers(url, driver, database, password):
    # The rendered text may be percent-encoded; what matters is that it parses back intact.
    parsed = make_url(async_url(url))
    assert (parsed.drivername, parsed.database, parsed.password) == (driver, database, password)


async def test_is_sqlite():
    engine = create_engine("sqlite:///:memory:")
    try:
        assert is_sqlite(engine)
    finally:
        await engine.dispose()

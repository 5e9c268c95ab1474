"""Group commit: writes that arrive together share one transaction, and each caller still
gets its own answer (journal duplicates, conversation saves, failures, cancellation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.mqtt.journal import Journal, JournalEntry, requests_table
from service.store.conversations import Conversation, ConversationStore
from service.store.db import GroupCommit, begin_write, create_engine, create_tables, dispose


def entry(request_id: str, user: str = "alice") -> JournalEntry:
    return JournalEntry(
        user=user,
        id=request_id,
        kind="chat",
        topic=f"lookout/{user}/chat",
        payload=b'{"text":"hi"}',
        reply_topic=f"lookout/{user}/reply/{request_id}",
        correlation_data=None,
        received_at=time.time(),
    )


@pytest.fixture(params=["memory", "file"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = "sqlite:///:memory:" if request.param == "memory" else f"sqlite:///{tmp_path}/x.db"
    eng = create_engine(url)
    await create_tables(eng)
    yield eng
    await dispose(eng)


async def test_a_burst_of_begins_is_journaled_with_duplicates_told_apart(engine):
    journal = Journal(engine)
    assert await journal.begin(entry("old")) is True
    burst = [entry(f"r{i}") for i in range(50)]
    burst += [entry("r7"), entry("old"), entry("r7", user="bob")]
    results = await asyncio.gather(*(journal.begin(e) for e in burst))
    assert results[:50] == [True] * 50
    # A second copy in the same burst and an id journaled before are duplicates; the
    # same id from another user is not.
    assert results[50:] == [False, False, True]
    async with engine.connect() as conn:
        stored = (
            await conn.execute(sa.select(sa.func.count()).select_from(requests_table))
        ).scalar()
    assert stored == 52


async def test_a_burst_of_finishes_marks_every_request(engine):
    journal = Journal(engine)
    ids = [f"r{i}" for i in range(30)]
    await asyncio.gather(*(journal.begin(entry(i)) for i in ids))
    await asyncio.gather(*(journal.finish("alice", i, "done") for i in ids[:20]))
    assert {e.id for e in await journal.unfinished()} == set(ids[20:])


async def test_a_failing_batch_fails_each_of_its_callers_and_later_batches_still_run(engine):
    calls: list[list[int]] = []

    def write(_conn: sa.Connection, items: list[int]) -> list[int]:
        calls.append(items)
        if -1 in items:
            raise RuntimeError("disk full")
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(engine, write, "test-group")
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [RuntimeError] * 3
    assert await group.submit(3) == 30
    assert calls == [[1, -1, 2], [3]]


async def test_a_caller_cancelled_before_its_batch_is_left_out(engine):
    seen: list[list[str]] = []

    def write(_conn: sa.Connection, items: list[str]) -> list[None]:
        seen.append(items)
        return [None] * len(items)

    group: GroupCommit[str, None] = GroupCommit(engine, write, "test-group")
    async with begin_write(engine):  # the writer's turn is taken: batches wait for it
        first = asyncio.create_task(group.submit("first"))
        await asyncio.sleep(0)  # the first batch is taken and waits for the turn
        dropped = asyncio.create_task(group.submit("dropped"))
        kept = asyncio.create_task(group.submit("kept"))
        await asyncio.sleep(0)  # both are queued now, waiting for their results
        dropped.cancel()
    await asyncio.gather(first, kept)
    assert seen == [["first"], ["kept"]]
    assert dropped.cancelled()


async def test_conversation_saves_together_insert_new_ones_and_replace_known_ones(engine):
    store = ConversationStore(engine, ttl_s=3600)
    known = Conversation("known", "alice", [{"role": "user", "content": "one"}])
    await store.save(known)
    known.messages.append({"role": "assistant", "content": "two"})
    fresh = [Conversation(f"c{i}", "bob", [{"role": "user", "content": str(i)}]) for i in range(20)]
    await asyncio.gather(store.save(known), *(store.save(c) for c in fresh))
    got = await store.get("known")
    assert got is not None and [m["content"] for m in got.messages] == ["one", "two"]
    for c in fresh:
        stored = await store.get(c.id)
        assert stored is not None and stored.user == "bob" and stored.messages == c.messages


async def test_two_saves_of_one_conversation_in_one_batch_keep_the_last(engine):
    store = ConversationStore(engine, ttl_s=3600)
    a = Conversation("same", "alice", [{"role": "user", "content": "first"}])
    b = Conversation("same", "alice", [{"role": "user", "content": "second"}])
    await asyncio.gather(store.save(a), store.save(b))
    got = await store.get("same")
    assert got is not None and got.messages == b.messages

"""The request journal: exactly-once execution across redelivery and restarts.

Every request is written here, keyed by (user, id), before the broker gets its PUBACK.
A redelivered copy finds its row and is not run again. A request whose row has no
``finished_at`` when lookout starts was interrupted (a crash, ``kill -9``) and is run
again, so nothing accepted is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db import GroupCommit, begin_write, metadata

requests_table = sa.Table(
    "requests",
    metadata,
    sa.Column("user", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("reply_topic", sa.Text, nullable=False),
    sa.Column("correlation_data", sa.LargeBinary, nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Index("ix_requests_pending", "finished_at"),
    sa.Index("ix_requests_received", "received_at"),
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One accepted request as it was received."""

    user: str
    id: str
    kind: str
    topic: str
    payload: bytes
    reply_topic: str
    correlation_data: bytes | None
    received_at: float


class Journal:
    """Accepted requests, by (user, id).

    Requests that arrive together are journaled together (see
    :class:`~service.db.GroupCommit`): a burst of 200 chats costs a few transactions,
    not 200 one after the other.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._begins = GroupCommit(engine, _insert_new, "journal-begin")
        self._finishes = GroupCommit(engine, _mark_finished, "journal-finish")

    async def begin(self, entry: JournalEntry) -> bool:
        """Record a request; ``False`` when (user, id) was already recorded (a duplicate)."""
        try:
            return await self._begins.submit(entry)
        except IntegrityError:
            # Another process journaled one of the batch between our check and insert:
            # fall back to one transaction per request, which tells each apart.
            return await self._begin_one(entry)

    async def _begin_one(self, entry: JournalEntry) -> bool:
        try:
            async with begin_write(self._engine) as conn:
                await conn.execute(requests_table.insert().values(**_entry_row(entry)))
        except IntegrityError:
            return False
        return True

    async def finish(self, user: str, request_id: str, outcome: str) -> None:
        """Mark a request as answered with its terminal reply."""
        await self._finishes.submit((user, request_id, outcome, time.time()))

    async def unfinished(self) -> list[JournalEntry]:
        """Requests accepted but never answered, oldest first."""
        t = requests_table
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    t.c.user,
                    t.c.id,
                    t.c.kind,
                    t.c.topic,
                    t.c.payload,
                    t.c.reply_topic,
                    t.c.correlation_data,
                    t.c.received_at,
                )
                .where(t.c.finished_at.is_(None))
                .order_by(t.c.received_at)
            )
            return [JournalEntry(*row) for row in rows]

    async def purge(self, older_than_s: float) -> int:
        """Forget finished requests older than ``older_than_s`` seconds; returns how many."""
        cutoff = time.time() - older_than_s
        async with begin_write(self._engine) as conn:
            result = await conn.execute(
                requests_table.delete().where(
                    requests_table.c.finished_at.is_not(None),
                    requests_table.c.received_at < cutoff,
                )
            )
            return int(result.rowcount or 0)


def _entry_row(entry: JournalEntry) -> dict[str, Any]:
    return {
        "user": entry.user,
        "id": entry.id,
        "kind": entry.kind,
        "topic": entry.topic,
        "payload": entry.payload,
        "reply_topic": entry.reply_topic,
        "correlation_data": entry.correlation_data,
        "received_at": entry.received_at,
    }


async def _insert_new(conn: AsyncConnection, entries: list[JournalEntry]) -> list[bool]:
    """Insert the entries not journaled yet; ``True`` for each one inserted."""
    t = requests_table
    if len(entries) == 1:
        # The usual case, in one statement: the database says whether it was new.
        dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
        stmt = dialect.insert(t).values(**_entry_row(entries[0])).on_conflict_do_nothing()
        return [(await conn.execute(stmt)).rowcount == 1]
    ids = list({entry.id for entry in entries})
    rows = await conn.execute(sa.select(t.c.user, t.c.id).where(t.c.id.in_(ids)))
    known = {(user, request_id) for user, request_id in rows}
    fresh: list[dict[str, Any]] = []
    results: list[bool] = []
    for entry in entries:
        key = (entry.user, entry.id)
        results.append(key not in known)
        if key not in known:
            known.add(key)  # a second copy in the same batch is a duplicate too
            fresh.append(_entry_row(entry))
    if fresh:
        await conn.execute(t.insert(), fresh)
    return results


_FINISH = (
    requests_table.update()
    .where(
        requests_table.c.user == sa.bindparam("b_user"),
        requests_table.c.id == sa.bindparam("b_id"),
    )
    .values(finished_at=sa.bindparam("b_at"), outcome=sa.bindparam("b_outcome"))
)


async def _mark_finished(
    conn: AsyncConnection, items: list[tuple[str, str, str, float]]
) -> list[None]:
    params = [
        {"b_user": user, "b_id": request_id, "b_outcome": outcome, "b_at": at}
        for user, request_id, outcome, at in items
    ]
    await conn.execute(_FINISH, params)
    return [None] * len(items)

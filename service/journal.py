"""The request journal: exactly-once execution across redelivery and restarts.

Every request is written here, keyed by (user, id), before the broker gets its PUBACK.
A redelivered copy finds its row and is not run again. A request whose row has no
``finished_at`` when lookout starts was interrupted (a crash, ``kill -9``) and is run
again, so nothing accepted is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import metadata

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
    """Accepted requests, by (user, id)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def begin(self, entry: JournalEntry) -> bool:
        """Record a request; ``False`` when (user, id) was already recorded (a duplicate)."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    requests_table.insert().values(
                        user=entry.user,
                        id=entry.id,
                        kind=entry.kind,
                        topic=entry.topic,
                        payload=entry.payload,
                        reply_topic=entry.reply_topic,
                        correlation_data=entry.correlation_data,
                        received_at=entry.received_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def finish(self, user: str, request_id: str, outcome: str) -> None:
        """Mark a request as answered with its terminal reply."""
        async with self._engine.begin() as conn:
            await conn.execute(
                requests_table.update()
                .where(requests_table.c.user == user, requests_table.c.id == request_id)
                .values(finished_at=time.time(), outcome=outcome)
            )

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
        async with self._engine.begin() as conn:
            result = await conn.execute(
                requests_table.delete().where(
                    requests_table.c.finished_at.is_not(None),
                    requests_table.c.received_at < cutoff,
                )
            )
            return int(result.rowcount or 0)

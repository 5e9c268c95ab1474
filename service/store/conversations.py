"""Server-held conversations, so a one-line request can continue an earlier exchange.

A conversation belongs to the user who started it. Its stored chain never holds images
(a live frame is replaced by a short placeholder once its turn is over) and never takes
``system`` or ``tool`` messages from a client: those only come from lookout itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.db import GroupCommit, begin_write, is_sqlite, metadata

conversations_table = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("messages", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_conversations_updated", "updated_at"),
)


@dataclass(slots=True)
class Conversation:
    """One stored chain of OpenAI-format messages."""

    id: str
    user: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


class ConversationStore:
    """Conversations by id, expiring ``ttl_s`` after their last turn."""

    def __init__(self, engine: AsyncEngine, ttl_s: float) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._saves = GroupCommit(engine, self._upsert, "conversation-save")

    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, unless it does not exist or has expired."""
        t = conversations_table
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == conversation_id))).one_or_none()
        if row is None or row.updated_at < time.time() - self._ttl_s:
            return None
        return Conversation(
            row.id, row.user, json.loads(row.messages), row.created_at, row.updated_at
        )

    async def save(self, conversation: Conversation) -> None:
        """Insert or replace the conversation (saves that arrive together share a commit)."""
        conversation.updated_at = time.time()
        await self._saves.submit(
            {
                "id": conversation.id,
                "user": conversation.user,
                "messages": json.dumps(conversation.messages, ensure_ascii=False),
                "created_at": conversation.created_at,
                "updated_at": conversation.updated_at,
            }
        )

    def _upsert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> list[None]:
        t = conversations_table
        latest = {row["id"]: row for row in rows}  # two saves of one id: the last wins
        stmt = sqlite.insert(t) if is_sqlite(self._engine) else postgresql.insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.id],
            set_={
                "user": stmt.excluded.user,
                "messages": stmt.excluded.messages,
                "created_at": stmt.excluded.created_at,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt, list(latest.values()))
        return [None] * len(rows)

    async def purge(self) -> int:
        """Delete expired conversations; returns how many."""
        t = conversations_table
        async with begin_write(self._engine) as conn:
            result = await conn.execute(
                t.delete().where(t.c.updated_at < time.time() - self._ttl_s)
            )
        return int(result.rowcount or 0)

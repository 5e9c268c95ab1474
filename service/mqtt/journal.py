"""The request journal: exactly-once execution across redelivery and restarts.

Every request is written here, keyed by (user, id), before the broker gets its PUBACK.
A redelivered copy finds its row and is not run again. A request whose row has no
``finished_at`` when lookout starts was interrupted (a crash, ``kill -9``) and is run
again, so nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store import GroupCommit, begin_write, metadata, orphaned

log = structlog.get_logger(__name__)

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
    # A cluster's ownership (nullable: added by the upgrade, unused by a single worker):
    # the worker running the request, and how many workers have started it.
    sa.Column("worker_id", sa.Integer, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=True),
    # The terminal reply, written just before it is published (a cluster only): a worker
    # that takes the request over sends this again instead of running it a second time.
    sa.Column("terminal", sa.LargeBinary, nullable=True),
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
    attempt: int = 1
    """1 for the first run; a cluster's re-run of a dead worker's request counts up."""
    terminal: bytes | None = None
    """The terminal reply its dead worker was about to publish (then it is not re-run)."""


class Journal:
    """Accepted requests, by (user, id).

    Requests that arrive together are journaled together (see
    :class:`~service.store.db.GroupCommit`): a burst of 200 chats costs a few transactions,
    not 200 one after the other.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.worker_id: int | None = None
        """Set in a cluster: requests journaled here are owned by this worker."""
        self._begins = GroupCommit(engine, self._insert_new, "journal-begin")
        self._finishes = GroupCommit(engine, _mark_finished, "journal-finish")
        self._terminals = GroupCommit(engine, _record_terminal, "journal-terminal")

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
                row = _entry_row(entry) | _owner(self.worker_id)
                await conn.execute(requests_table.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def _insert_new(self, conn: sa.Connection, entries: list[JournalEntry]) -> list[bool]:
        return _insert_new(conn, entries, self.worker_id)

    async def owner(self, user: str, request_id: str) -> tuple[str, int | None] | None:
        """``(kind, worker id)`` of an unfinished request, or ``None`` (unknown or answered)."""
        t = requests_table
        query = sa.select(t.c.kind, t.c.worker_id).where(
            t.c.user == user, t.c.id == request_id, t.c.finished_at.is_(None)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (str(row[0]), row[1]) if row is not None else None

    async def claim_orphans(self, limit: int) -> list[JournalEntry]:
        """Take over up to ``limit`` unfinished requests whose worker is dead; oldest first.

        One statement: the rows are chosen with ``FOR UPDATE SKIP LOCKED``, so workers
        claiming at once split them, and each row is run by the one worker that won it.

        Args:
            limit: How many this worker can start now.
        """
        t = requests_table
        if limit <= 0:
            return []
        chosen = (
            sa.select(t.c.user, t.c.id)
            .where(t.c.finished_at.is_(None), orphaned(t.c.worker_id))
            .order_by(t.c.received_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            t.update()
            .where(sa.tuple_(t.c.user, t.c.id).in_(chosen))
            .values(worker_id=self.worker_id, attempt=sa.func.coalesce(t.c.attempt, 1) + 1)
            .returning(*_entry_columns())
        )
        async with begin_write(self._engine) as conn:
            rows = (await conn.execute(stmt)).all()
        entries = [JournalEntry(*row) for row in rows]
        return sorted(entries, key=lambda e: e.received_at)

    async def record_terminal(self, user: str, request_id: str, payload: bytes) -> None:
        """Keep the terminal reply about to be published (see ``requests.terminal``)."""
        await self._terminals.submit((user, request_id, payload))

    async def finish(self, user: str, request_id: str, outcome: str) -> None:
        """Mark a request as answered with its terminal reply."""
        await self._finishes.submit((user, request_id, outcome, time.time()))

    async def unfinished(self) -> list[JournalEntry]:
        """Requests accepted but never answered, oldest first."""
        t = requests_table
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                # A single worker's restart runs them again from the start: no attempt
                # count or kept terminal reply (those are for a cluster's takeover).
                sa.select(*_entry_columns(with_run=False))
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


def _entry_columns(*, with_run: bool = True) -> list[sa.Column[Any]]:
    """The journal's columns in ``JournalEntry``'s field order.

    ``with_run`` adds the attempt count and the kept terminal reply.
    """
    names = [f.name for f in dataclasses.fields(JournalEntry)]
    if not with_run:
        names = [n for n in names if n not in {"attempt", "terminal"}]
    return [requests_table.c[n] for n in names]


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


def _owner(worker_id: int | None) -> dict[str, Any]:
    return {} if worker_id is None else {"worker_id": worker_id, "attempt": 1}


def _insert_new(
    conn: sa.Connection, entries: list[JournalEntry], worker_id: int | None = None
) -> list[bool]:
    """Insert the entries not journaled yet; ``True`` for each one inserted."""
    t = requests_table
    owner = _owner(worker_id)
    if len(entries) == 1:
        # The usual case, in one statement: the database says whether it was new.
        dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
        row = _entry_row(entries[0]) | owner
        stmt = dialect.insert(t).values(**row).on_conflict_do_nothing()
        return [conn.execute(stmt).rowcount == 1]
    ids = list({entry.id for entry in entries})
    rows = conn.execute(sa.select(t.c.user, t.c.id).where(t.c.id.in_(ids)))
    known = {(user, request_id) for user, request_id in rows}
    fresh: list[dict[str, Any]] = []
    results: list[bool] = []
    for entry in entries:
        key = (entry.user, entry.id)
        results.append(key not in known)
        if key not in known:
            known.add(key)  # a second copy in the same batch is a duplicate too
            fresh.append(_entry_row(entry) | owner)
    if fresh:
        conn.execute(t.insert(), fresh)
    return results


_FINISH = (
    requests_table.update()
    .where(
        requests_table.c.user == sa.bindparam("b_user"),
        requests_table.c.id == sa.bindparam("b_id"),
    )
    .values(finished_at=sa.bindparam("b_at"), outcome=sa.bindparam("b_outcome"))
)


def _mark_finished(conn: sa.Connection, items: list[tuple[str, str, str, float]]) -> list[None]:
    params = [
        {"b_user": user, "b_id": request_id, "b_outcome": outcome, "b_at": at}
        for user, request_id, outcome, at in items
    ]
    conn.execute(_FINISH, params)
    return [None] * len(items)


_TERMINAL = (
    requests_table.update()
    .where(
        requests_table.c.user == sa.bindparam("b_user"),
        requests_table.c.id == sa.bindparam("b_id"),
    )
    .values(terminal=sa.bindparam("b_terminal"))
)


def _record_terminal(conn: sa.Connection, items: list[tuple[str, str, bytes]]) -> list[None]:
    params = [{"b_user": u, "b_id": i, "b_terminal": p} for u, i, p in items]
    conn.execute(_TERMINAL, params)
    return [None] * len(items)


FINISH_RETRY_INITIAL_S = 0.1
FINISH_RETRY_MAX_S = 5.0
"""Backoff between attempts to record a request's outcome while the store fails."""


async def record_outcome(journal: Journal, user: str, request_id: str, outcome: str) -> None:
    """Record the outcome, retrying while the store fails, even if we are cancelled meanwhile.

    A lost write would make the request look unanswered and replay it after a restart,
    giving the caller a second terminal reply. So a failing write (database locked, disk
    full) is retried with capped backoff until it succeeds; a cancel (shutdown) lets the
    write in progress finish, then stops retrying and is re-raised.
    """
    delay = FINISH_RETRY_INITIAL_S
    attempts = 0
    cancelled = False
    while True:
        attempts += 1
        write = asyncio.get_running_loop().create_task(
            journal.finish(user, request_id, outcome), name="journal-finish"
        )
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:  # noqa: BLE001, S110 - read from the future below
                pass
        if write.cancelled():  # the loop is closing under us
            cancelled = True
            break
        error = write.exception()
        if error is None:
            if attempts > 1:
                log.info("journal_finish_recovered", attempts=attempts)
            break
        if cancelled:
            # Stopping with the store down: the request may run again at the next start.
            log.error("journal_finish_lost", error=f"{type(error).__name__}: {error}"[:300])
            break
        log.warning(
            "journal_finish_failed",
            error=f"{type(error).__name__}: {error}"[:300],
            attempts=attempts,
            retry_in_s=delay,
        )
        try:
            await asyncio.sleep(delay)  # backoff before the retry, not a poll
        except asyncio.CancelledError:
            cancelled = True
        if cancelled:
            log.error("journal_finish_lost", error="stopped while the store was failing")
            break
        delay = min(delay * 2, FINISH_RETRY_MAX_S)
    if cancelled:
        raise asyncio.CancelledError


async def skip_entry(journal: Journal, entry: JournalEntry) -> None:
    """Mark a journaled request that cannot be run again (an unknown kind) as finished."""
    try:
        await journal.finish(entry.user, entry.id, "skipped")
    except Exception:
        log.exception("journal_finish_failed")

"""The ``watches`` table: every watch, running or finished, so a restart loses none.

A running watch is saved on every status change and after every verdict; at start the
engine resumes the unfinished ones with their original deadline. Finished watches stay
for ``watch.history_keep_s`` (for `list` and `get`), then :meth:`WatchStore.purge`
deletes them and the engine clears their retained topics.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store import metadata
from service.watch.machine import TERMINAL, WatchJob, WatchStatus

watches_table = sa.Table(
    "watches",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("zones", sa.Text, nullable=False),
    sa.Column("max_duration_minutes", sa.Integer, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deadline", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("end_reason", sa.String(24), nullable=True),
    sa.Column("iterations", sa.Integer, nullable=False),
    sa.Column("model_calls", sa.Integer, nullable=False),
    sa.Column("wakeups", sa.Integer, nullable=False),
    sa.Column("last_call_at", sa.Float, nullable=True),
    sa.Column("last_verdict_at", sa.Float, nullable=True),
    sa.Column("next_run_at", sa.Float, nullable=True),
    sa.Column("retry_at", sa.Float, nullable=True),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_reasoning", sa.Text, nullable=False),
    sa.Column("notification_message", sa.Text, nullable=False),
    sa.Column("alerted", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Added with the change gate: nullable, so an older database gets them on upgrade.
    sa.Column("skipped_unchanged", sa.Integer, nullable=True),
    sa.Column("confirmations", sa.Integer, nullable=True),
    # A cluster's owner (nullable: added by the upgrade; a single worker leaves it empty).
    sa.Column("worker_id", sa.Integer, nullable=True),
    sa.Index("ix_watches_status", "status"),
    sa.Index("ix_watches_user", "user", "created_at"),
    sa.Index("ix_watches_ended", "ended_at"),
)

_TERMINAL_VALUES = [s.value for s in TERMINAL]


def job_to_row(job: WatchJob) -> dict[str, Any]:
    """The columns of ``job`` (its in-memory-only fields left out)."""
    return {
        "id": job.id,
        "user": job.user,
        "camera": job.camera,
        "condition": job.condition,
        "labels": json.dumps(list(job.labels)),
        "zones": json.dumps(list(job.zones)),
        "max_duration_minutes": job.max_duration_minutes,
        "source": job.source,
        "request_id": job.request_id,
        "status": job.status.value,
        "created_at": job.created_at,
        "deadline": job.deadline,
        "ended_at": job.ended_at,
        "end_reason": job.end_reason,
        "iterations": job.iterations,
        "model_calls": job.model_calls,
        "wakeups": job.wakeups,
        "last_call_at": job.last_call_at,
        "last_verdict_at": job.last_verdict_at,
        "next_run_at": job.next_run_at,
        "retry_at": job.retry_at,
        "errors": job.errors,
        "last_error": job.last_error,
        "last_reasoning": job.last_reasoning,
        "notification_message": job.notification_message,
        "alerted": job.alerted,
        "updated_at": job.updated_at,
        "skipped_unchanged": job.skipped_unchanged,
        "confirmations": job.confirmations,
    }


def row_to_job(row: RowMapping) -> WatchJob:
    """A job from its stored columns."""
    return WatchJob(
        id=row["id"],
        user=row["user"],
        camera=row["camera"],
        condition=row["condition"],
        created_at=row["created_at"],
        deadline=row["deadline"],
        labels=tuple(json.loads(row["labels"])),
        zones=tuple(json.loads(row["zones"])),
        max_duration_minutes=row["max_duration_minutes"],
        source="chat" if row["source"] == "chat" else "request",
        request_id=row["request_id"],
        status=WatchStatus(row["status"]),
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        iterations=row["iterations"],
        model_calls=row["model_calls"],
        wakeups=row["wakeups"],
        last_call_at=row["last_call_at"],
        last_verdict_at=row["last_verdict_at"],
        next_run_at=row["next_run_at"],
        retry_at=row["retry_at"],
        errors=row["errors"],
        last_error=row["last_error"],
        last_reasoning=row["last_reasoning"],
        notification_message=row["notification_message"],
        alerted=bool(row["alerted"]),
        updated_at=row["updated_at"],
        skipped_unchanged=row["skipped_unchanged"] or 0,
        confirmations=row["confirmations"] or 0,
    )


class WatchStore:
    """Watches by id; rows are whole-job snapshots, so the last write wins."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.worker_id: int | None = None
        """Set in a cluster: the watches this worker saves are the ones it owns."""

    async def save(self, row: dict[str, Any]) -> None:
        """Insert or replace one job's row (from :func:`job_to_row`)."""
        t = watches_table
        values = {k: v for k, v in row.items() if k != "id"}
        if self.worker_id is not None:
            row = row | {"worker_id": self.worker_id}
            values["worker_id"] = self.worker_id
        async with self._engine.begin() as conn:
            result = await conn.execute(t.update().where(t.c.id == row["id"]).values(**values))
            if not result.rowcount:
                await conn.execute(t.insert().values(**row))

    async def get(self, job_id: str) -> WatchJob | None:
        """One job, or ``None``."""
        t = watches_table
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == job_id))).one_or_none()
        return row_to_job(row._mapping) if row is not None else None

    async def find_by_request(self, user: str, request_id: str) -> WatchJob | None:
        """The job a `start` request created, so a replayed request does not start another."""
        t = watches_table
        query = sa.select(t).where(t.c.user == user, t.c.request_id == request_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query.limit(1))).one_or_none()
        return row_to_job(row._mapping) if row is not None else None

    async def unfinished(self) -> list[WatchJob]:
        """Jobs to resume: not terminal, oldest first."""
        t = watches_table
        query = sa.select(t).where(t.c.status.not_in(_TERMINAL_VALUES)).order_by(t.c.created_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [row_to_job(r._mapping) for r in rows]

    async def unalerted(self, now: float | None = None) -> list[WatchJob]:
        """Finished jobs whose alert may not have gone out (a crash in between)."""
        t = watches_table
        query = sa.select(t).where(_unalerted(now if now is not None else time.time()))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [row_to_job(r._mapping) for r in rows]

    async def list_jobs(self, user: str | None, limit: int = 100) -> list[WatchJob]:
        """Newest first; ``user=None`` lists everyone's."""
        t = watches_table
        query = sa.select(t).order_by(t.c.created_at.desc()).limit(limit)
        if user is not None:
            query = query.where(t.c.user == user)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [row_to_job(r._mapping) for r in rows]

    async def purge(self, ended_before: float) -> list[tuple[str, str]]:
        """Delete jobs that finished before ``ended_before``; returns their (user, id)."""
        t = watches_table
        where = sa.and_(t.c.status.in_(_TERMINAL_VALUES), t.c.ended_at < ended_before)
        async with self._engine.begin() as conn:
            rows = (await conn.execute(sa.select(t.c.user, t.c.id).where(where))).all()
            if rows:
                await conn.execute(t.delete().where(t.c.id.in_([r.id for r in rows])))
        return [(r.user, r.id) for r in rows]

    # -- a cluster's ownership ---------------------------------------------------------

    async def claim(
        self, orphaned: sa.ColumnElement[bool], limit: int, job_id: str | None = None
    ) -> list[WatchJob]:
        """Take over unfinished watches whose owner is dead (or ``job_id`` only); oldest first.

        ``FOR UPDATE SKIP LOCKED`` splits the orphans among workers claiming at once, and
        the ``UPDATE`` gives each to exactly one of them.
        """
        t = watches_table
        chosen = sa.select(t.c.id).where(t.c.status.not_in(_TERMINAL_VALUES), orphaned)
        if job_id is not None:
            chosen = chosen.where(t.c.id == job_id)
        chosen = chosen.order_by(t.c.created_at).limit(limit).with_for_update(skip_locked=True)
        stmt = t.update().where(t.c.id.in_(chosen)).values(worker_id=self.worker_id).returning(t)
        async with self._engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return sorted((row_to_job(r._mapping) for r in rows), key=lambda j: j.created_at)

    async def claim_unalerted(self, orphaned: sa.ColumnElement[bool]) -> list[WatchJob]:
        """Finished watches of dead owners whose alert may not have gone out; now ours."""
        t = watches_table
        stmt = (
            t.update()
            .where(_unalerted(time.time()), orphaned)
            .values(worker_id=self.worker_id)
            .returning(t)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [row_to_job(r._mapping) for r in rows]

    async def release(self) -> int:
        """Give up this worker's unfinished watches (a graceful stop); returns how many."""
        t = watches_table
        stmt = (
            t.update()
            .where(t.c.worker_id == self.worker_id, t.c.status.not_in(_TERMINAL_VALUES))
            .values(worker_id=None)
        )
        async with self._engine.begin() as conn:
            return int((await conn.execute(stmt)).rowcount or 0)

    async def owners(self) -> dict[str, int | None]:
        """Unfinished watches and the worker id that owns each."""
        t = watches_table
        query = sa.select(t.c.id, t.c.worker_id).where(t.c.status.not_in(_TERMINAL_VALUES))
        async with self._engine.connect() as conn:
            return {row[0]: row[1] for row in await conn.execute(query)}


CANCEL_ALERT_RESEND_S = 600.0
"""A cancelled watch's alert is resent after a crash only this soon after the cancel:
cancels have alerted only since this release, and older ones must not alert now."""


def _unalerted(now: float) -> sa.ColumnElement[bool]:
    """Finished watches whose alert may not have gone out (a crash came in between)."""
    t = watches_table
    ended = t.c.status.in_([WatchStatus.SUCCESS.value, WatchStatus.FAILED.value])
    cancelled = sa.and_(
        t.c.status == WatchStatus.CANCELLED.value,
        t.c.ended_at > now - CANCEL_ALERT_RESEND_S,
    )
    return sa.and_(t.c.alerted.is_(False), sa.or_(ended, cancelled))

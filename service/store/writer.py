"""The batching writer behind :class:`~service.store.events.EventStore`.

:meth:`BatchWriter.submit` merges a patch into an in-memory buffer keyed by id (O(1);
repeated updates of one object coalesce) and wakes the writer task, which upserts up to
``batch_rows`` ids per transaction every ``flush_interval_s``. A failed write (database
locked, disk full, server gone) puts the batch back in front of newer patches and
retries with capped exponential backoff, so an accepted row is never dropped for a
transient error. A batch that fails on its data is written row by row so that only the
bad row is dropped (counted, logged). Only when the buffer is full (``max_pending``
distinct ids, far above a 10,000-message burst) is a new patch refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.db import is_sqlite
from service.store.schema import (
    EventPatch,
    ReviewPatch,
    event_zones_table,
    events_table,
    reviews_table,
)

log = structlog.get_logger(__name__)


def _transient(exc: BaseException) -> bool:
    """Errors that a retry can cure (lock, I/O, connection) as opposed to bad data."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | OSError | TimeoutError)


class BatchWriter:
    """Buffers patches and writes them in batches; see the module docstring.

    Args:
        engine: The database.
        batch_rows: Most ids written in one transaction.
        flush_interval_s: How long the writer lets a batch fill before writing it.
        max_pending: Most distinct ids waiting in memory; beyond it ``submit`` refuses.
        retry_initial_s: First backoff after a failed write; doubles up to ``retry_max_s``.
        retry_max_s: Longest backoff.
        on_write_error: Called with each write failure (tests and metrics).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_rows: int,
        flush_interval_s: float,
        max_pending: int,
        retry_initial_s: float,
        retry_max_s: float,
        on_write_error: Callable[[BaseException], None] | None,
    ) -> None:
        self._engine = engine
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._max_pending = max_pending
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._on_write_error = on_write_error
        self._events: dict[str, EventPatch] = {}
        self._reviews: dict[str, ReviewPatch] = {}
        self._in_flight = 0
        self.lock = asyncio.Lock()
        """Held for every write transaction (SQLite has one writer; purge takes turns)."""
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self.closing = asyncio.Event()
        self._sqlite = is_sqlite(engine)
        self.events_written = 0
        """Event rows written since start (the store re-analyses SQLite as it grows)."""
        self.stats = dict.fromkeys(
            (
                "accepted",
                "coalesced",
                "rows_written",
                "batches",
                "write_errors",
                "rows_rejected",
                "dropped_overflow",
            ),
            0,
        )

    async def run_once(self) -> None:
        """Wait for patches, let a batch fill, write everything pending.

        Returns early, writing nothing, once ``closing`` is set: ``close`` then writes
        what is left under its own deadline.
        """
        await self._wake.wait()
        if self.closing.is_set():
            return
        if self.pending() < self._batch_rows:
            # Let a batch fill; a full batch or close() cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._full.wait()
        await self.drain(deadline=None)

    def close(self) -> None:
        """Stop :meth:`run` (call :meth:`drain` afterwards to write what is left)."""
        self.closing.set()
        self._wake.set()
        self._full.set()

    def submit(self, patch: EventPatch) -> bool:
        """Queue an event patch for writing; O(1), never blocks.

        Returns:
            ``False`` if the buffer is full and the patch was dropped (counted, logged).
        """
        return self._submit(self._events, patch)

    def submit_review(self, patch: ReviewPatch) -> bool:
        """Queue a review patch for writing; O(1), never blocks.

        Returns:
            ``False`` if the buffer is full and the patch was dropped.
        """
        return self._submit(self._reviews, patch)

    def _submit(self, buffer: dict[str, Any], patch: EventPatch | ReviewPatch) -> bool:
        # Repeated updates of one id within a batch merge into one row write.
        current = buffer.get(patch.id)
        if current is not None:
            current.merge(patch)
            self.stats["coalesced"] += 1
        elif not self._admit():
            return False
        else:
            buffer[patch.id] = patch
        self._accepted()
        return True

    def _admit(self) -> bool:
        if self.pending() < self._max_pending:
            return True
        self.stats["dropped_overflow"] += 1
        if (
            self.stats["dropped_overflow"] in (1, 10, 100)
            or not self.stats["dropped_overflow"] % 1000
        ):
            log.error(
                "event_buffer_overflow",
                dropped=self.stats["dropped_overflow"],
                max_pending=self._max_pending,
            )
        return False

    def _accepted(self) -> None:
        self.stats["accepted"] += 1
        self._wake.set()
        if self.pending() >= self._batch_rows:
            self._full.set()

    def pending(self) -> int:
        """Distinct ids accepted but not yet written (including a batch being written)."""
        return len(self._events) + len(self._reviews) + self._in_flight

    async def drain(self, deadline: float | None) -> None:
        """Write everything pending, retrying transient failures with backoff.

        Args:
            deadline: Event-loop time after which to give up (``None``: keep trying,
                unless ``closing`` is set, when the caller of ``close`` takes over).

        Raises:
            TimeoutError: The deadline passed with rows still pending (they stay buffered).
        """
        loop = asyncio.get_running_loop()
        # The deadline also bounds the wait for the lock: the writer task may hold it
        # while it retries a database that stays locked.
        async with asyncio.timeout_at(deadline):
            await self.lock.acquire()
        try:
            await self._drain_locked(loop, deadline)
        finally:
            self.lock.release()

    async def _drain_locked(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        delay = self._retry_initial
        while self.pending():
            error = await self._write_next_batch()
            if error is None:
                delay = self._retry_initial
                continue
            if not _transient(error):
                await self._write_one_by_one()
                continue
            if deadline is None and self.closing.is_set():
                return  # the writer task yields to close(), which has a deadline
            if deadline is not None and loop.time() + delay > deadline:
                raise TimeoutError("event store could not write in time") from error
            await asyncio.sleep(delay)  # backoff before the retry, not a poll
            delay = min(delay * 2, self._retry_max)
        self._wake.clear()
        self._full.clear()

    async def _write_next_batch(self) -> Exception | None:
        """Write up to ``batch_rows`` ids; on failure put them back and return the error."""
        events = self._take(self._events)
        reviews = self._take(self._reviews)
        self._in_flight = len(events) + len(reviews)
        try:
            await self._write(list(events.values()), list(reviews.values()))
        except Exception as exc:  # noqa: BLE001 - task boundary: keep the rows, caller retries
            self._restore(events, reviews)
            self._failed(exc)
            return exc
        finally:
            self._in_flight = 0
        self.stats["batches"] += 1
        self.stats["rows_written"] += len(events) + len(reviews)
        self.events_written += len(events)
        return None

    def _take(self, buffer: dict[str, Any]) -> dict[str, Any]:
        taken = dict(itertools.islice(buffer.items(), self._batch_rows))
        for key in taken:
            del buffer[key]
        return taken

    def _restore(self, events: dict[str, EventPatch], reviews: dict[str, ReviewPatch]) -> None:
        """Put a failed batch back in front of what arrived meanwhile."""
        for key, patch in self._events.items():
            if key in events:
                events[key].merge(patch)
            else:
                events[key] = patch
        self._events = events
        for key, review in self._reviews.items():
            if key in reviews:
                reviews[key].merge(review)
            else:
                reviews[key] = review
        self._reviews = reviews

    def _failed(self, exc: BaseException) -> None:
        self.stats["write_errors"] += 1
        errors = self.stats["write_errors"]
        if errors <= 3 or not errors % 50:
            log.warning(
                "event_write_failed",
                error=f"{type(exc).__name__}: {exc}"[:300],
                pending=self.pending(),
                errors=errors,
            )
        if self._on_write_error is not None:
            self._on_write_error(exc)

    async def _write_one_by_one(self) -> None:
        """A batch failed on its data: write rows singly and drop only the bad ones."""
        events = self._take(self._events)
        reviews = self._take(self._reviews)
        for patch in events.values():
            await self._write_single([patch], [])
        for review in reviews.values():
            await self._write_single([], [review])

    async def _write_single(self, events: list[EventPatch], reviews: list[ReviewPatch]) -> None:
        try:
            await self._write(events, reviews)
        except Exception as exc:  # noqa: BLE001 - isolate one bad row
            error = exc
        else:
            self.stats["rows_written"] += 1
            return
        if _transient(error):
            self._restore({p.id: p for p in events}, {r.id: r for r in reviews})
            return
        self.stats["rows_rejected"] += 1
        # The error text is left out on purpose: it carries the whole row's parameters.
        ident = events[0].id if events else reviews[0].id
        log.error("event_row_rejected", id=ident, error=type(error).__name__)

    async def _write(self, events: list[EventPatch], reviews: list[ReviewPatch]) -> None:
        async with self._engine.begin() as conn:
            for full in (True, False):
                rows = [p.params() for p in events if p.full is full]
                if rows:
                    await conn.execute(self._event_upsert(full), rows)
            cleared = [p.id for p in events if p.full and p.sub_label_cleared]
            if cleared:
                # Frigate removed the sub label: NULL is what the upsert reads as "not
                # said", so the clear is its own statement, after the upsert.
                c = events_table.c
                await conn.execute(
                    sa.update(events_table)
                    .where(c.id.in_(cleared))
                    .values(sub_label=None, sub_label_score=None)
                )
            zones = [
                {"event_id": p.id, "zone": zone, "start_time": p.start_time}
                for p in events
                if p.full and p.zones
                for zone in p.zones
            ]
            if zones:
                await conn.execute(self._zone_insert(), zones)
            if reviews:
                await conn.execute(self._review_upsert(), [r.params() for r in reviews])

    def _insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table) if self._sqlite else postgresql.insert(table)

    def _event_upsert(self, full: bool) -> Any:
        stmt = self._insert(events_table)
        new, old = stmt.excluded, events_table.c
        keep = (
            "camera", "label", "top_score", "has_clip",
            "has_snapshot", "description", "plate", "face", "face_score",
        )  # fmt: skip
        values: dict[str, Any] = {name: sa.func.coalesce(new[name], old[name]) for name in keep}
        values["updated_at"] = new.updated_at
        # entered_zones only grows, so the longer list is the union; a stale message that
        # arrives late must not shrink it (json_array_length exists in SQLite and PostgreSQL).
        values["zones"] = sa.case(
            (new.zones.is_(None), old.zones),
            (old.zones.is_(None), new.zones),
            (
                sa.func.json_array_length(new.zones) >= sa.func.json_array_length(old.zones),
                new.zones,
            ),
            else_=old.zones,
        )
        if full:
            # Frigate's own message is authoritative for start time, sub label and end. An
            # end lookout made up (end_reason set: Frigate went away, or went quiet) gives
            # way to whatever Frigate says now, "still open" included.
            values["end_time"] = sa.case(
                (old.end_reason.is_not(None), new.end_time),
                else_=sa.func.coalesce(new.end_time, old.end_time),
            )
            values["end_reason"] = sa.null()
            values["start_time"] = new.start_time
            values["sub_label"] = sa.func.coalesce(new.sub_label, old.sub_label)
            values["sub_label_score"] = sa.case(
                (new.sub_label.is_not(None), new.sub_label_score), else_=old.sub_label_score
            )
        else:
            values["end_time"] = sa.func.coalesce(new.end_time, old.end_time)
            # A plate owner's or classifier's name only fills an empty sub label.
            values["sub_label"] = sa.func.coalesce(old.sub_label, new.sub_label)
            values["sub_label_score"] = sa.case(
                (old.sub_label.is_(None), new.sub_label_score), else_=old.sub_label_score
            )
        return stmt.on_conflict_do_update(index_elements=[old.id], set_=values)

    def _zone_insert(self) -> Any:
        stmt = self._insert(event_zones_table)
        return stmt.on_conflict_do_nothing(
            index_elements=[event_zones_table.c.event_id, event_zones_table.c.zone]
        )

    def _review_upsert(self) -> Any:
        stmt = self._insert(reviews_table)
        new, old = stmt.excluded, reviews_table.c
        values: dict[str, Any] = {
            name: new[name]
            for name in (
                "camera", "start_time", "severity", "objects", "sub_labels", "zones",
                "audio", "detections", "detections_dropped", "updated_at",
            )
        }  # fmt: skip
        for name in ("title", "summary", "short_summary", "threat_level"):
            values[name] = sa.func.coalesce(new[name], old[name])
        # As for events: Frigate's word replaces an end lookout made up.
        values["end_time"] = sa.case(
            (old.end_reason.is_not(None), new.end_time),
            else_=sa.func.coalesce(new.end_time, old.end_time),
        )
        values["end_reason"] = sa.null()
        return stmt.on_conflict_do_update(index_elements=[old.id], set_=values)

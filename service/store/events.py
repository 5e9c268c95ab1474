"""The event & review history: batched writes and fast queries over SQLAlchemy Core.

Writes never happen on the message loop: :meth:`EventStore.submit` is O(1) and a named
writer task (:meth:`EventStore.run`, see :mod:`service.store.writer`) upserts batches.
Queries are shaped so that each filter can drive an index (see :meth:`EventStore.search`),
which keeps a million-event history answering in about a millisecond. The same code
runs on SQLite (default, WAL) and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.store.db import create_tables, is_sqlite
from service.store.ends import (
    WENT_AWAY,
    Ended,
    HistoryBounds,
    end_open,
    end_quiet_events,
    end_quiet_reviews,
    ended_counts,
    history_bounds,
)
from service.store.schema import (
    TABLES,
    EventPatch,
    EventRow,
    ReviewPatch,
    ReviewRow,
    event_row,
    event_zones_table,
    events_table,
    review_row,
    reviews_table,
)
from service.store.standby import Standby
from service.store.upkeep import Purged, purge
from service.store.writer import BatchWriter

log = structlog.get_logger(__name__)

SEARCH_LIMIT_MAX = 100
REVIEWS_LIMIT_MAX = 500
ZONE_PROBE = 2_000
"""Below this many matching zone rows, drive the search from the zone index (see ``search``)."""
OPEN_REVIEW_HORIZON_S = 86_400.0
"""An open review that started this long before a window is taken as abandoned (Frigate died)."""
DAY_S = 86_400.0


def _as_list(values: Sequence[str] | None) -> list[str] | None:
    """A list of the values; a lone string is one value, not its characters."""
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


class EventStore:
    """Event and review history with a batching writer.

    Run :meth:`start` once, then :meth:`run` and :meth:`run_retention` as named tasks;
    :meth:`close` writes what is left and ends both.

    Args:
        engine: From :func:`service.store.db.create_engine` (SQLite or PostgreSQL).
        batch_rows: Most ids written in one transaction.
        flush_interval_s: How long the writer lets a batch fill before writing it.
        max_pending: Most distinct ids waiting in memory; beyond it ``submit`` refuses.
        retry_initial_s: First backoff after a failed write; doubles up to ``retry_max_s``.
        retry_max_s: Longest backoff.
        clock: Wall clock for retention (injected in tests).
        on_write_error: Called with each write failure (tests and metrics).
        zone_probe: See :meth:`_zone_clause` (tests lower it to cover both query shapes).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_rows: int = 1_000,
        flush_interval_s: float = 0.05,
        max_pending: int = 200_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_write_error: Callable[[BaseException], None] | None = None,
        zone_probe: int = ZONE_PROBE,
    ) -> None:
        self._engine = engine
        self._zone_probe = zone_probe
        self._clock = clock
        self._sqlite = is_sqlite(engine)
        self._writer = BatchWriter(
            engine,
            batch_rows=batch_rows,
            flush_interval_s=flush_interval_s,
            max_pending=max_pending,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
            on_write_error=on_write_error,
        )
        self._standby: Standby | None = None
        """Set while a cluster's other worker writes the history (see ``stand_by``)."""
        self._analyzed_at = 0
        self._review_span = OPEN_REVIEW_HORIZON_S
        """Longest review segment known (at least the open-review horizon); see ``reviews``."""
        """``events_written`` when SQLite's statistics were last refreshed."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables if missing, note the longest review, refresh SQLite's statistics."""
        await create_tables(self._engine, TABLES)
        async with self._engine.begin() as conn:
            c = reviews_table.c
            longest = await conn.scalar(sa.select(sa.func.max(c.end_time - c.start_time)))
        self._review_span = max(self._review_span, float(longest or 0.0))
        await self.optimize()

    async def run(self) -> None:
        """The writer task: write batches until :meth:`close` (give the task a name)."""
        while not self._writer.closing.is_set():
            await self._writer.run_once()
            await self._maybe_optimize()

    async def flush(self, timeout: float | None = None) -> None:
        """Write everything submitted so far, retrying failed writes.

        Args:
            timeout: Give up after this many seconds (the rows stay buffered).

        Raises:
            TimeoutError: The rows could not be written in time.
        """
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        await self._writer.drain(deadline=deadline)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is left (for at most ``timeout`` s) and end :meth:`run` and retention."""
        self._writer.close()
        try:
            await self.flush(timeout=timeout)
        except TimeoutError:
            log.exception("event_store_close_lost_rows", pending=self._writer.pending())

    # -- submitting --------------------------------------------------------------

    def submit(self, patch: EventPatch) -> bool:
        """Queue an event patch for writing; O(1), never blocks.

        Returns:
            ``False`` if the buffer is full and the patch was dropped (counted, logged).
        """
        if self._standby is not None:
            self._standby.hold(patch)
            return True
        return self._writer.submit(patch)

    def stand_by(self, keep_s: float) -> None:
        """Hold patches instead of writing them (a cluster worker that is not the writer)."""
        self._standby = Standby(keep_s)

    def take_over(self) -> int:
        """Become the writer: write the held patches first, then everything that comes."""
        standby, self._standby = self._standby, None
        held = standby.take() if standby is not None else []
        for patch in held:
            if isinstance(patch, EventPatch):
                self._writer.submit(patch)
            else:
                self._writer.submit_review(patch)
        return len(held)

    def submit_review(self, patch: ReviewPatch) -> bool:
        """Queue a review patch for writing; O(1), never blocks.

        Returns:
            ``False`` if the buffer is full and the patch was dropped (counted, logged).
        """
        if patch.end_time is not None:
            self._review_span = max(self._review_span, patch.end_time - patch.start_time)
        if self._standby is not None:
            self._standby.hold(patch)
            return True
        return self._writer.submit_review(patch)

    def stats(self) -> dict[str, int]:
        """Writer counters (accepted, coalesced, rows_written, write_errors, ...) and pending."""
        return {**self._writer.stats, "pending": self._writer.pending()}

    # -- queries -----------------------------------------------------------------

    async def search(
        self,
        *,
        cameras: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        sub_labels: Sequence[str] | None = None,
        zones: Sequence[str] | None = None,
        after: float | None = None,
        before: float | None = None,
        limit: int = 25,
    ) -> list[EventRow]:
        """Tracked objects matching every given filter, newest first.

        Each list filter is "any of"; ``None`` means no filter and an empty list matches
        nothing (an empty camera list from an access check must never mean "all").
        ``after``/``before`` bound ``start_time`` strictly, like Frigate.

        Args:
            cameras: Camera ids.
            labels: Object labels (exact).
            sub_labels: Sub label names (case-insensitive; faces fill empty sub labels).
            zones: Zone ids the object entered.
            after: Unix time; only objects that started later.
            before: Unix time; only objects that started earlier.
            limit: Clamped to 1..100.
        """
        limit = max(1, min(SEARCH_LIMIT_MAX, int(limit)))
        cameras, labels = _as_list(cameras), _as_list(labels)
        sub_labels, zones = _as_list(sub_labels), _as_list(zones)
        if any(f is not None and not f for f in (cameras, labels, sub_labels, zones)):
            return []
        c = events_table.c
        where: list[Any] = [c.label.is_not(None)]
        if cameras is not None:
            where.append(c.camera.in_(cameras))
        if labels is not None:
            where.append(c.label.in_(labels))
        if sub_labels is not None:
            where.append(sa.func.lower(c.sub_label).in_([s.lower() for s in sub_labels]))
        if after is not None:
            where.append(c.start_time > after)
        if before is not None:
            where.append(c.start_time < before)
        async with self._engine.connect() as conn:
            if zones is not None:
                clause = await self._zone_clause(conn, zones, after, before)
                if clause is None:
                    return []
                where.append(clause)
            query = sa.select(events_table).where(*where)
            result = await conn.execute(query.order_by(c.start_time.desc()).limit(limit))
            return [event_row(row) for row in result.mappings()]

    async def _zone_clause(
        self, conn: AsyncConnection, zones: list[str], after: float | None, before: float | None
    ) -> Any:
        """Pick the zone filter's shape by how many objects entered those zones.

        Walking newest events and checking each one's zones is fast when the zones are
        busy but scans the whole table for a rare zone; listing the zone's events from
        the zone index is fast for a rare zone but sorts every match for a busy one.
        A bounded count (at most ``ZONE_PROBE`` index entries) chooses; zero matches
        answers at once.
        """
        z = event_zones_table.c
        where: list[Any] = [z.zone.in_(zones)]
        if after is not None:
            where.append(z.start_time > after)
        if before is not None:
            where.append(z.start_time < before)
        probe = sa.select(sa.literal(1)).where(*where).limit(self._zone_probe).subquery()
        found = (await conn.execute(sa.select(sa.func.count()).select_from(probe))).scalar_one()
        if found == 0:
            return None
        if found < self._zone_probe:
            return events_table.c.id.in_(sa.select(z.event_id).where(*where))
        return sa.exists().where(z.event_id == events_table.c.id, z.zone.in_(zones))

    async def get(self, event_id: str) -> EventRow | None:
        """One event by id (``None`` if unknown or only a fragment so far)."""
        c = events_table.c
        query = sa.select(events_table).where(c.id == event_id, c.label.is_not(None))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else event_row(row)

    async def recent(self, limit: int = 25) -> list[EventRow]:
        """The newest events (limit clamped to 1..100)."""
        return await self.search(limit=limit)

    async def reviews(
        self,
        *,
        after: float | None = None,
        before: float | None = None,
        cameras: Sequence[str] | None = None,
        severity: str | None = None,
        limit: int = 100,
    ) -> list[ReviewRow]:
        """Review segments overlapping ``(after, before)``, oldest first, for recaps.

        A segment overlaps when it started before ``before`` and had not ended by
        ``after``. A segment still open (no end) counts unless it started more than
        a day before ``after`` (Frigate stopped without ending it).

        Args:
            after: Window start (unix time).
            before: Window end (unix time).
            cameras: Camera ids; ``None`` = any, ``[]`` = nothing.
            severity: ``alert`` or ``detection``.
            limit: Clamped to 1..500.
        """
        limit = max(1, min(REVIEWS_LIMIT_MAX, int(limit)))
        cameras = _as_list(cameras)
        if cameras is not None and not cameras:
            return []
        c = reviews_table.c
        where: list[Any] = []
        if cameras is not None:
            where.append(c.camera.in_(cameras))
        if severity is not None:
            where.append(c.severity == severity)
        if before is not None:
            where.append(c.start_time < before)
        if after is not None:
            open_recent = sa.and_(
                c.end_time.is_(None), c.start_time > after - OPEN_REVIEW_HORIZON_S
            )
            where.append(sa.or_(c.end_time > after, open_recent))
            # No segment lasts longer than the longest one seen, so this lower bound on
            # start_time changes nothing in the result but turns "ended after `after`"
            # (every later segment) into a short range of the start_time index.
            where.append(c.start_time > after - self._review_span)
        query = sa.select(reviews_table).where(*where).order_by(c.start_time).limit(limit)
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [review_row(row) for row in result.mappings()]

    async def cameras(self) -> list[str]:
        """Every camera the history knows, so a restart remembers cameras Frigate is quiet about."""
        async with self._engine.connect() as conn:
            query = (
                sa.select(events_table.c.camera)
                .distinct()
                .where(events_table.c.camera.is_not(None))
            )
            return sorted(str(row[0]) for row in await conn.execute(query))

    async def count(self) -> int:
        """Number of stored events (fragments included)."""
        async with self._engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(events_table)
            return int((await conn.execute(query)).scalar_one())

    async def count_reviews(self) -> int:
        """Number of stored review segments."""
        async with self._engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(reviews_table)
            return int((await conn.execute(query)).scalar_one())

    # -- retention ---------------------------------------------------------------

    async def end_open(
        self, *, at: float | None, reason: str = WENT_AWAY, cameras: Sequence[str] | None = None
    ) -> Ended:
        """End every open event and review (Frigate went away); see :mod:`service.store.ends`.

        What was submitted before is written first, so an end is never overtaken by an
        older message still in the buffer.
        """
        await self.flush()
        async with self._writer.lock, self._engine.begin() as conn:
            ended = await end_open(conn, at=at, reason=reason, cameras=cameras)
        if ended.events or ended.reviews:
            log.info("history_open_ended", reason=reason, at=at, **ended_counts(ended))
        return ended

    async def end_quiet(self, *, cutoff: float) -> Ended:
        """End events and reviews Frigate has not mentioned since ``cutoff``."""
        async with self._writer.lock, self._engine.begin() as conn:
            ended = Ended(
                await end_quiet_events(conn, cutoff=cutoff),
                await end_quiet_reviews(conn, cutoff=cutoff),
            )
        if ended.events or ended.reviews:
            log.info("history_quiet_ended", cutoff=cutoff, **ended_counts(ended))
        return ended

    async def bounds(self) -> HistoryBounds:
        """Oldest and newest event starts and the oldest open event (for imports)."""
        async with self._engine.connect() as conn:
            return await history_bounds(conn)

    async def purge(self, older_than_days: float) -> Purged:
        """Delete events and reviews that started more than ``older_than_days`` ago."""
        return await purge(self._engine, self._writer.lock, self._clock() - older_than_days * DAY_S)

    async def run_retention(self, retention_days: float, interval_s: float = DAY_S) -> None:
        """Purge now and then every ``interval_s`` until :meth:`close` (give the task a name)."""
        while True:
            try:
                await self.purge(retention_days)
                await self.optimize()
            except Exception:  # task boundary: try again next interval
                log.exception("history_purge_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._writer.closing.wait()
            if self._writer.closing.is_set():
                return

    async def optimize(self) -> None:
        """Refresh SQLite's planner statistics (sampled, a few ms); PostgreSQL autovacuums."""
        if not self._sqlite:
            return
        async with self._writer.lock, self._engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            await conn.exec_driver_sql("ANALYZE")
        self._analyzed_at = self._writer.events_written

    async def _maybe_optimize(self) -> None:
        # Re-analyse each time the table has (about) doubled since the last time, so
        # the planner's picture of a young, fast-growing table stays right.
        written = self._writer.events_written
        if self._sqlite and written - self._analyzed_at > max(1_000, self._analyzed_at):
            await self.optimize()

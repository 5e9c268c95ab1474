"""Ending what Frigate left open: events and reviews that never got an ``end``.

Frigate sends no ``end`` for the objects and review segments that were open when it
stopped or crashed; it closes them in its own database on the way down or at the next
start. lookout does the same in its history (:func:`end_open`), and also ends what
Frigate has simply stopped mentioning (:func:`end_quiet_events`,
:func:`end_quiet_reviews`): Frigate re-publishes every tracked object at least once a
minute, so an event lookout has not heard of for ``frigate.object_ttl_s`` is over.

Every such end carries an ``end_reason`` so answers can say that the end time is
lookout's, not Frigate's; a later word from Frigate (a message or its history API)
replaces it (see the upsert in :mod:`service.store.writer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from service.store.schema import events_table, reviews_table

WENT_AWAY = "frigate_went_away"
NOT_REPORTED = "not_reported"


@dataclass(frozen=True, slots=True)
class Ended:
    """How many rows one pass ended."""

    events: int = 0
    reviews: int = 0


@dataclass(frozen=True, slots=True)
class HistoryBounds:
    """What the history holds, for deciding what to import from Frigate.

    Attributes:
        earliest_start: Start of the oldest event (``None``: no events).
        latest_start: Start of the newest event.
        oldest_open_start: Start of the oldest event that has no end.
    """

    earliest_start: float | None
    latest_start: float | None
    oldest_open_start: float | None


def _end_at(start: Any, at: float) -> Any:
    # An end before the start would be nonsense (a clock that stepped back).
    return sa.case((start > at, start), else_=at)


async def end_open(
    conn: Any, *, at: float | None, reason: str = WENT_AWAY, cameras: Sequence[str] | None = None
) -> Ended:
    """End every open event and review.

    Args:
        conn: An open write transaction (``AsyncConnection``).
        at: The end time (when Frigate went away); ``None`` uses each row's last update,
            for when lookout does not know when Frigate went away.
        reason: The ``end_reason`` recorded.
        cameras: Only these cameras (``None``: all).
    """
    counts = []
    for table in (events_table, reviews_table):
        c = table.c
        end = c.updated_at if at is None else _end_at(c.start_time, at)
        stmt = sa.update(table).where(c.end_time.is_(None), c.camera.is_not(None))
        if cameras is not None:
            stmt = stmt.where(c.camera.in_(list(cameras)))
        result = await conn.execute(stmt.values(end_time=end, end_reason=reason))
        counts.append(result.rowcount or 0)
    return Ended(counts[0], counts[1])


async def end_quiet_events(conn: Any, *, cutoff: float) -> int:
    """End open events lookout has heard nothing of since ``cutoff``, at their last update."""
    c = events_table.c
    result = await conn.execute(
        sa.update(events_table)
        .where(c.end_time.is_(None), c.camera.is_not(None), c.updated_at < cutoff)
        .values(end_time=c.updated_at, end_reason=NOT_REPORTED)
    )
    return int(result.rowcount or 0)


async def end_quiet_reviews(conn: Any, *, cutoff: float) -> int:
    """End open reviews that are quiet since ``cutoff`` and have no open object left.

    Frigate ends a review 30-40 s after its last active object; one whose objects have
    all ended and that has had no message since ``cutoff`` is over. Its end is the last
    end among its objects (else its last update).
    """
    r, e = reviews_table.c, events_table.c
    rows = (
        await conn.execute(
            sa.select(r.id, r.detections, r.updated_at).where(
                r.end_time.is_(None), r.updated_at < cutoff
            )
        )
    ).all()
    ended = 0
    for review_id, detections, updated_at in rows:
        ids = [d for d in detections or [] if isinstance(d, str)]
        ends: list[float | None] = []
        if ids:
            found = await conn.execute(sa.select(e.end_time).where(e.id.in_(ids)))
            ends = [row[0] for row in found]
        if any(end is None for end in ends):
            continue  # an object of it is still open: not quiet yet
        end = max([x for x in ends if x is not None], default=updated_at)
        await conn.execute(
            sa.update(reviews_table)
            .where(r.id == review_id, r.end_time.is_(None))
            .values(end_time=end, end_reason=NOT_REPORTED)
        )
        ended += 1
    return ended


def ended_counts(ended: Ended) -> dict[str, int]:
    """``{"events": n, "reviews": m}`` for logs."""
    return {"events": ended.events, "reviews": ended.reviews}


async def history_bounds(conn: Any) -> HistoryBounds:
    """The oldest and newest event starts, and the start of the oldest open event."""
    c = events_table.c
    earliest, latest = (
        await conn.execute(
            sa.select(sa.func.min(c.start_time), sa.func.max(c.start_time)).where(
                c.camera.is_not(None)
            )
        )
    ).one()
    oldest_open = await conn.scalar(
        sa.select(sa.func.min(c.start_time)).where(c.end_time.is_(None), c.camera.is_not(None))
    )
    return HistoryBounds(earliest, latest, oldest_open)

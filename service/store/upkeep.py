"""Retention: deleting history older than ``store.retention_days``, in short chunks."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.schema import event_zones_table, events_table, reviews_table

log = structlog.get_logger(__name__)

PURGE_CHUNK = 5_000


class Purged(NamedTuple):
    """How many rows a retention pass removed."""

    events: int
    reviews: int


async def purge(engine: AsyncEngine, lock: asyncio.Lock, cutoff: float) -> Purged:
    """Delete events and reviews that started before ``cutoff``.

    Deletes in chunks, each its own short transaction under the writer's ``lock``, so
    the batch writer is never held off for long.
    """
    events = reviews = 0
    while deleted := await _purge_chunk(engine, lock, cutoff, events_table):
        events += deleted
    while deleted := await _purge_chunk(engine, lock, cutoff, reviews_table):
        reviews += deleted
    if events or reviews:
        log.info("history_purged", events=events, reviews=reviews, cutoff=cutoff)
    return Purged(events, reviews)


async def _purge_chunk(
    engine: AsyncEngine, lock: asyncio.Lock, cutoff: float, table: sa.Table
) -> int:
    async with lock, engine.begin() as conn:
        query = sa.select(table.c.id).where(table.c.start_time < cutoff).limit(PURGE_CHUNK)
        ids = list((await conn.execute(query)).scalars())
        if not ids:
            return 0
        if table is events_table:
            zones = event_zones_table.c
            await conn.execute(sa.delete(event_zones_table).where(zones.event_id.in_(ids)))
        await conn.execute(sa.delete(table).where(table.c.id.in_(ids)))
        return len(ids)

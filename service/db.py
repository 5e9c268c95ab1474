"""The database handle: one async SQLAlchemy engine for SQLite (default) or PostgreSQL.

Tables are declared with SQLAlchemy Core on the shared :data:`metadata` by the module
that owns them (``journal.py``, ``events.py``, ...), so the same code runs on the
embedded SQLite file and on a PostgreSQL server when one machine is not enough.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

metadata = sa.MetaData()


def async_url(url: str) -> str:
    """Map a user-facing URL (``sqlite:///x.db``, ``postgresql://…``) to its async driver."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    """Whether the engine talks to SQLite (which wants batched, serialised writes)."""
    return engine.dialect.name == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    """Create the engine; for a SQLite file, make its folder and turn on WAL.

    Args:
        url: ``sqlite:///path.db``, ``sqlite:///:memory:`` or ``postgresql://user@host/db``.
    """
    full = async_url(url)
    parsed = make_url(full)
    kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One connection, or every checkout would see its own empty database; queued
            # rather than shared (StaticPool), because one task's return-to-pool rollback
            # would silently undo another task's uncommitted write on the shared connection.
            kwargs["poolclass"] = AsyncAdaptedQueuePool
            kwargs["pool_size"] = 1
            kwargs["max_overflow"] = 0
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(full, **kwargs)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets readers (search) run while the batch writer commits; NORMAL sync
            # keeps commits cheap and is still durable across a process crash.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


async def create_tables(engine: AsyncEngine) -> None:
    """Create every table declared on :data:`metadata` that does not exist yet."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)

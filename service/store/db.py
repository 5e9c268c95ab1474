"""The database handle: one async SQLAlchemy engine for SQLite (default) or PostgreSQL.

Tables are declared with SQLAlchemy Core on the shared :data:`metadata` by the module
that owns them (``journal.py``, ``events.py``, ...), so the same code runs on the
embedded SQLite file and on a PostgreSQL server when one machine is not enough.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

log = structlog.get_logger(__name__)

metadata = sa.MetaData()

_write_locks: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()
_sqlite_writers: weakref.WeakKeyDictionary[Engine, _SqliteWriter] = weakref.WeakKeyDictionary()

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


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
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        database = parsed.database or ""
        if database not in ("", ":memory:"):
            # The whole transaction of a batched write in one hop to a thread of its
            # own (see GroupCommit); a :memory: database exists only on its one connection.
            _sqlite_writers[engine.sync_engine] = _SqliteWriter(parsed.set(drivername="sqlite"))
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # First: switching a new file to WAL takes a lock that another process starting at
    # the same moment may hold, and only a busy timeout makes this one wait for it.
    cursor.execute("PRAGMA busy_timeout=3000")
    # WAL lets readers (search) run while the batch writer commits; NORMAL sync keeps
    # commits cheap and is still durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _SqliteWriter:
    """A plain (pysqlite) engine on the same file, used by one thread of its own.

    Through aiosqlite every statement, the BEGIN and the COMMIT is a round trip between
    the event loop and aiosqlite's thread, each waiting for a loop iteration: journaling
    one request took 1.9 ms, mostly waiting. Here a whole transaction is one hop.
    """

    def __init__(self, url: sa.URL) -> None:
        self.engine = sa.create_engine(url)
        sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    def transact(self, write: Callable[[sa.Connection, ItemT], ResultT], arg: ItemT) -> ResultT:
        with self.engine.begin() as conn:
            return write(conn, arg)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()


async def run_write(
    engine: AsyncEngine, write: Callable[[sa.Connection, ItemT], ResultT], arg: ItemT
) -> ResultT:
    """Run ``write(conn, arg)`` in one write transaction (see :func:`begin_write`).

    On a SQLite file the transaction runs in one hop on a writer thread; elsewhere
    through the async driver (``run_sync``).
    """
    writer = _sqlite_writers.get(engine.sync_engine)
    if writer is None:
        async with begin_write(engine) as conn:
            return await conn.run_sync(write, arg)
    async with _write_lock(engine):
        done = asyncio.get_running_loop().run_in_executor(
            writer.executor, writer.transact, write, arg
        )
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            # The thread finishes the transaction anyway; keep the writer's turn until it
            # has, or the next writer would wait on SQLite's lock instead of ours.
            await asyncio.wait([done])
            raise


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's connections and its SQLite writer thread, if any."""
    writer = _sqlite_writers.pop(engine.sync_engine, None)
    if writer is not None:
        await asyncio.to_thread(writer.close)
    await engine.dispose()


SCHEMA_LOCK_KEY = 0x6C6F6F6B6F7574
"""PostgreSQL advisory lock held while the schema is brought up to date ("lookout")."""


async def create_tables(engine: AsyncEngine, tables: Sequence[sa.Table] | None = None) -> None:
    """Bring the schema up to date: create missing tables, add missing columns.

    An upgrade adds only nullable columns, which ``ALTER TABLE ... ADD COLUMN`` adds to
    an existing table on SQLite and PostgreSQL alike, so a database written by an older
    lookout keeps its rows. Workers that start at once take turns instead of racing on
    the same DDL: on PostgreSQL through a transaction-scoped advisory lock, on SQLite
    through the file's write lock, taken before the first look.

    Args:
        engine: The database.
        tables: Only these tables (default: every table declared on :data:`metadata`).
    """
    async with engine.begin() as conn:
        if is_sqlite(engine):
            # Without it the driver runs each CREATE on its own, and a process could
            # lose one table after another to the others (busy_timeout makes it wait).
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
        await conn.run_sync(_sync_schema, list(tables) if tables is not None else None)


def _sync_schema(conn: sa.Connection, tables: list[sa.Table] | None) -> None:
    metadata.create_all(conn, tables=tables)
    inspector = sa.inspect(conn)
    for table in tables if tables is not None else metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise RuntimeError(
                    f"cannot add the required column {table.name}.{column.name} to an "
                    "existing table"
                )
            kind = column.type.compile(dialect=conn.dialect)
            name = conn.dialect.identifier_preparer.quote(column.name)
            table_name = conn.dialect.identifier_preparer.quote(table.name)
            conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}"))
            log.info("schema_column_added", table=table.name, column=column.name)


@asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` for a write transaction, one at a time per engine on SQLite.

    SQLite has one writer. Without this, concurrent writers (200 chats journaling at
    once) collide on the database lock and wait in SQLite's busy handler, which sleeps
    1, 2, 5 ... 100 ms between tries: seconds of latency for a few hundred 1 ms writes.
    Queued on an asyncio lock instead, they run back to back. PostgreSQL needs no turns.
    """
    if not is_sqlite(engine):
        async with engine.begin() as conn:
            yield conn
        return
    async with _write_lock(engine), engine.begin() as conn:
        yield conn


def _write_lock(engine: AsyncEngine) -> asyncio.Lock:
    lock = _write_locks.get(engine.sync_engine)
    if lock is None:
        lock = _write_locks[engine.sync_engine] = asyncio.Lock()
    return lock


class GroupCommit(Generic[ItemT, ResultT]):
    """Writes that arrive together are committed together, in one transaction.

    Each :meth:`submit` queues an item and waits for its result; one task (started on
    demand, gone when the queue is empty) takes everything queued and hands it to
    ``write(conn, items) -> results``, a plain function run in one transaction by
    :func:`run_write`. Through the async driver a transaction costs about ten round
    trips between the event loop and the database thread; under load each waits a loop
    iteration, so one write per request made a burst of 200 requests queue for seconds.
    Batched, the burst costs a few transactions (and on a SQLite file, a few hops).

    A caller that is cancelled before its batch is taken is left out of it. When
    ``write`` raises, every caller of that batch gets the exception.

    Args:
        engine: The database.
        write: Writes a batch on the given connection; one result per item, in order.
        name: Names the writing task.
        max_batch: Most items in one transaction.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        write: Callable[[sa.Connection, list[ItemT]], list[ResultT]],
        name: str,
        max_batch: int = 500,
    ) -> None:
        self._engine = engine
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        """Queue ``item`` and return its result once its batch is committed."""
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=self._name)
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = [(item, fut) for item, fut in self._queue[: self._max_batch] if not fut.done()]
            del self._queue[: self._max_batch]
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await run_write(self._engine, self._write, items)
            except asyncio.CancelledError:
                # The loop is closing: nobody may wait forever for this batch.
                for _, fut in batch + self._queue:
                    fut.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

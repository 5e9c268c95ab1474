"""Workers of a cluster in PostgreSQL: who is alive, who holds which role, and signals.

A worker is alive exactly as long as its *lease connection* lives: at start it inserts
its row into ``workers`` and takes a session-level advisory lock keyed by the row's id
on one dedicated connection. PostgreSQL frees that lock the moment the connection ends:
at once when the process dies (its socket closes), and after the TCP keepalive settings
below when its host or network goes away. Everything a worker owns (journaled
requests, watches, roles) names the worker's id, so "is its owner alive" is one look at
``pg_locks``, and a takeover is a conditional ``UPDATE`` that only one worker can win.

Roles (the history writer, the Home Assistant bridge) are advisory locks of their own on
the same connection, so they die with it too. ``LISTEN``/``NOTIFY`` on the connection
carries hand-overs and cross-worker calls (see :mod:`service.mqtt.control`).

A worker that loses its lease connection while it keeps running must stop at once: the
others may already have taken its work over. :meth:`Lease.run` checks the connection
every ``takeover_s / 10`` and reports a loss long before PostgreSQL's keepalives free
the lock (``takeover_s * 0.7``), so the old owner is gone before a new one starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.db import metadata

log = structlog.get_logger(__name__)

WORKER_LOCKS = 0x6C6B7772
"""Advisory lock namespace (first key) of the workers' liveness locks ("lkwr")."""
ROLE_LOCKS = 0x6C6B726C
"""Advisory lock namespace of the roles ("lkrl")."""
ROLES = {"history_writer": 1, "homeassistant": 2}
CHANNEL = "lookout_cluster"

workers_table = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(200), nullable=False),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("stopped_at", sa.Float, nullable=True),
    sa.Column("sweeper_id", sa.Integer, nullable=True),
    sa.Column("swept_at", sa.Float, nullable=True),
    sa.Index("ix_workers_name", "name"),
)


class ClusterError(RuntimeError):
    """The worker cannot join the cluster (a name already in use, no PostgreSQL)."""


def live_worker_ids() -> sa.Select[Any]:
    """``SELECT`` of the ids of live workers: those whose liveness lock is held now.

    Usable inside any statement (``worker_id NOT IN (…)``), so a claim and its liveness
    check are one atomic statement.
    """
    return (
        sa.select(sa.literal_column("objid::int"))
        .select_from(sa.text("pg_locks"))
        .where(
            sa.text(
                "locktype = 'advisory' AND granted AND objsubid = 2 AND classid = "
                ":worker_locks AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            ).bindparams(worker_locks=WORKER_LOCKS)
        )
    )


def orphaned(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Rows whose owner (``column``: a worker id) is no live worker, or never had one."""
    return sa.or_(column.is_(None), column.not_in(live_worker_ids()))


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker, for `health`."""

    id: int
    name: str
    host: str | None
    started_at: float


class Lease:
    """This worker's registration, liveness lock, roles and notifications.

    Args:
        engine: The PostgreSQL store.
        url: Its URL (the lease connection is a plain asyncpg connection of its own).
        name: The worker's name.
        client_id: Its MQTT client id (kept so another worker can sweep its session).
        takeover_s: The cluster's takeover bound (sets the checks and the keepalives).
    """

    def __init__(
        self, engine: AsyncEngine, url: str, name: str, client_id: str, takeover_s: float
    ) -> None:
        self.engine = engine
        self._url = url
        self.name = name
        self.client_id = client_id
        self.takeover_s = takeover_s
        self.worker_id = 0
        self._conn: Any = None
        """The asyncpg connection that holds the locks, outside SQLAlchemy's pool."""
        self._use = asyncio.Lock()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.roles: set[str] = set()

    async def open(self) -> int:
        """Register, take the liveness lock and listen; returns this worker's id.

        Raises:
            ClusterError: A live worker already has this name.
        """
        import asyncpg  # noqa: PLC0415 - the postgres extra; only a cluster needs it

        dsn = make_url(self._url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = await asyncpg.connect(dsn)
        t = self.takeover_s
        # Server side of the lease: a vanished host is declared dead within ~0.7 x takeover_s.
        await self._conn.execute(
            f"SET tcp_keepalives_idle = {max(1, int(t * 0.4))};"
            f"SET tcp_keepalives_interval = {max(1, int(t * 0.1))};"
            "SET tcp_keepalives_count = 3;"
            f"SET tcp_user_timeout = {int(t * 700)}"
        )
        live = await self.live_ids()
        async with self.engine.connect() as conn:
            taken = (
                await conn.execute(
                    sa.select(workers_table.c.id).where(
                        workers_table.c.name == self.name, workers_table.c.id.in_(live or [-1])
                    )
                )
            ).first()
        if taken is not None:
            await self._conn.close()
            raise ClusterError(f"a live worker is already named {self.name!r}")
        async with self._conn.transaction():
            self.worker_id = await self._conn.fetchval(
                "INSERT INTO workers (name, client_id, host, pid, started_at) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                self.name, self.client_id, socket.gethostname(), os.getpid(), time.time(),
            )  # fmt: skip
            # In the same transaction: nobody sees the row before its lock is held.
            await self._conn.execute(
                "SELECT pg_advisory_lock($1, $2)", WORKER_LOCKS, self.worker_id
            )
        await self._conn.add_listener(CHANNEL, self._on_notify)
        log.info("cluster_joined", worker=self.name, worker_id=self.worker_id)
        return self.worker_id

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback`` (quick, synchronous) with every cluster notification."""
        self._listeners.append(callback)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        for callback in list(self._listeners):
            try:
                callback(message)
            except Exception:
                log.exception("cluster_listener_failed")

    async def run(self, on_lost: Callable[[str], None]) -> None:
        """Check the lease connection until cancelled; call ``on_lost`` when it fails."""
        every, patience = self.takeover_s / 10, self.takeover_s / 5
        while True:
            # A probe of our own connection: PostgreSQL has no event for "your socket died".
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(patience):
                    async with self._use:
                        await self._conn.fetchval("SELECT 1")
            except (TimeoutError, OSError, Exception) as exc:  # noqa: BLE001 - any failure ends the lease
                on_lost(f"{type(exc).__name__}: {exc}"[:200])
                return

    async def notify(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every worker (this one included)."""
        payload = json.dumps(message, separators=(",", ":"))
        async with self.engine.begin() as conn:
            await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))

    async def try_role(self, role: str) -> bool:
        """Take ``role`` if nobody holds it; ``True`` when this worker holds it now."""
        if role in self.roles:
            return True
        async with self._use:
            got = await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", ROLE_LOCKS, ROLES[role]
            )
        if got:
            self.roles.add(role)
            log.info("cluster_role_taken", role=role, worker=self.name)
        return bool(got)

    async def release_role(self, role: str) -> None:
        """Give ``role`` up (a graceful stop)."""
        if role not in self.roles:
            return
        async with self._use:
            await self._conn.fetchval("SELECT pg_advisory_unlock($1, $2)", ROLE_LOCKS, ROLES[role])
        self.roles.discard(role)

    async def live_ids(self) -> list[int]:
        """The ids of the live workers."""
        async with self.engine.connect() as conn:
            return [int(row[0]) for row in await conn.execute(live_worker_ids())]

    async def workers(self) -> list[WorkerInfo]:
        """The live workers, oldest first."""
        t = workers_table
        query = (
            sa.select(t.c.id, t.c.name, t.c.host, t.c.started_at)
            .where(t.c.id.in_(live_worker_ids()))
            .order_by(t.c.started_at)
        )
        async with self.engine.connect() as conn:
            return [WorkerInfo(*row) for row in await conn.execute(query)]

    async def role_holders(self) -> dict[str, str | None]:
        """Which worker holds each role (``None``: nobody)."""
        holders: dict[str, str | None] = dict.fromkeys(ROLES)
        query = sa.text(
            "SELECT l.objid::int AS role, w.name FROM pg_locks l JOIN pg_locks wl "
            "ON wl.pid = l.pid AND wl.locktype = 'advisory' AND wl.classid = :wns "
            "AND wl.objsubid = 2 AND wl.granted JOIN workers w ON w.id = wl.objid::int "
            "WHERE l.locktype = 'advisory' AND l.classid = :rns AND l.objsubid = 2 "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"
        )
        names = {number: role for role, number in ROLES.items()}
        async with self.engine.connect() as conn:
            for number, name in await conn.execute(query, {"wns": WORKER_LOCKS, "rns": ROLE_LOCKS}):
                if number in names:
                    holders[names[number]] = name
        return holders

    async def claim_sweep(self) -> list[tuple[int, str, str]]:
        """Claim the broker sessions of dead workers nobody swept: ``(id, name, client_id)``.

        A dead worker whose client id a live worker uses now (a worker with a fixed name
        that came back) resumed that session itself: it is marked swept, not returned.
        """
        t = workers_table
        live = live_worker_ids()
        in_use = sa.select(t.c.client_id).where(t.c.id.in_(live)).scalar_subquery()
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(
                t.update()
                .where(t.c.swept_at.is_(None), t.c.id.not_in(live), t.c.client_id.in_(in_use))
                .values(swept_at=now)
            )
            rows = await conn.execute(
                t.update()
                .where(
                    t.c.swept_at.is_(None),
                    t.c.id != self.worker_id,
                    orphaned(t.c.sweeper_id) | (t.c.sweeper_id == self.worker_id),
                    t.c.id.not_in(live),
                )
                .values(sweeper_id=self.worker_id)
                .returning(t.c.id, t.c.name, t.c.client_id)
            )
            return [(int(i), str(n), str(c)) for i, n, c in rows]

    async def swept(self, worker_id: int) -> None:
        """Record that a dead worker's broker session was swept."""
        t = workers_table
        async with self.engine.begin() as conn:
            await conn.execute(t.update().where(t.c.id == worker_id).values(swept_at=time.time()))

    async def close(self) -> None:
        """Leave: free every lock (others take over at once) and close the connection."""
        if self._conn is None:
            return
        try:
            async with self._use:
                await self._conn.execute("SELECT pg_advisory_unlock_all()")
            t = workers_table
            async with self.engine.begin() as conn:
                await conn.execute(
                    t.update().where(t.c.id == self.worker_id).values(stopped_at=time.time())
                )
        except Exception:
            log.exception("cluster_leave_failed")
        finally:
            self.roles.clear()
            conn, self._conn = self._conn, None
            await conn.close(timeout=2)
        log.info("cluster_left", worker=self.name)

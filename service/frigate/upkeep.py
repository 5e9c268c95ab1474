"""The mirror's background work: what Frigate's comings and goings call for.

- When Frigate goes away (``offline``, its last will, or ``stopped``), end every event
  and review it left open, at the time it went away, as Frigate itself does in its
  database (it sends no ``end`` for them).
- While Frigate is online, end what it has stopped mentioning for ``object_ttl_s``
  (it re-publishes every tracked object at least once a minute).
- With ``frigate.url``: import Frigate's history at start and the gap after every
  reconnect, retrying with backoff while Frigate's API cannot be read.
- Ask Frigate for the true runtime state of every camera (``frigate/onConnect``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from service.frigate.history import HistoryError, HistoryImporter
from service.frigate.mirror import FrigateMirror
from service.store import EventStore

log = structlog.get_logger(__name__)

GONE = ("offline", "stopped")
GAP_MARGIN_S = 900.0
"""A gap import starts this long before the newest event lookout has (late updates)."""
RETRY_MAX_S = 900.0
ACTIVITY_EVERY_S = 10.0
DAY_S = 86_400.0

Publish = Callable[[str, bytes], Awaitable[None]]
NextConnection = Callable[[int], Awaitable[int]]


class Upkeep:
    """Runs the work in the module docstring as named tasks; see :meth:`run`.

    Args:
        mirror: The mirror whose availability changes drive the work.
        store: The history.
        retention_days: How far back the first import reaches.
        publish: Publishes one message (``frigate/onConnect``).
        clock: Wall clock (injected in tests).
    """

    def __init__(
        self,
        mirror: FrigateMirror,
        store: EventStore,
        *,
        retention_days: float,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mirror = mirror
        self.store = store
        self.retention_days = retention_days
        self.publish = publish
        self.clock = clock
        self.settings = mirror.settings
        self._import_wanted = asyncio.Event()
        self._import_full = False
        self._last_activity = float("-inf")

    async def run(self, next_connection: NextConnection) -> None:
        """Until cancelled: follow lookout's connections and Frigate's availability."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow_connections(next_connection), name="frigate-connections")
            tg.create_task(self._follow_availability(), name="frigate-availability")
            tg.create_task(self._end_quiet(), name="frigate-quiet-sweep")
            if self.mirror.importer is not None:
                tg.create_task(self._imports(self.mirror.importer), name="frigate-history")

    def want_import(self, *, full: bool) -> None:
        """Ask for an import: the whole retention window (``full``) or the gap."""
        self._import_full = self._import_full or full
        self._import_wanted.set()

    async def _follow_connections(self, next_connection: NextConnection) -> None:
        seen = 0
        while True:
            seen = await next_connection(seen)
            # The first connection imports everything; later ones the gap lookout missed.
            self.want_import(full=seen == 1)
            await self._ask_activity()

    async def _follow_availability(self) -> None:
        while True:
            change = await self.mirror.availability.get()
            if change.current in GONE and change.previous not in GONE:
                # Heard live: Frigate went away now. From a retained message at start:
                # some time ago, so each open row ends at the last time lookout heard of it.
                at = change.at if change.previous is not None else None
                try:
                    await self.store.end_open(at=at)
                except Exception:  # task boundary: the next change or sweep tries again
                    log.exception("history_end_open_failed")
            elif change.current == "online":
                if change.previous in GONE:
                    self.want_import(full=False)
                await self._ask_activity()

    async def _end_quiet(self) -> None:
        ttl = self.settings.object_ttl_s
        every = min(ttl / 4, 60.0)
        while True:
            await asyncio.sleep(every)  # a timer, not a poll: the sweep is periodic by nature
            if self.mirror.available() in GONE:
                continue  # already ended when Frigate went away
            try:
                await self.store.end_quiet(cutoff=self.clock() - ttl)
            except Exception:  # task boundary: the next sweep tries again
                log.exception("history_quiet_sweep_failed")

    async def _ask_activity(self) -> None:
        if not self.settings.request_activity:
            return
        now = self.clock()
        if now - self._last_activity < ACTIVITY_EVERY_S:
            return
        self._last_activity = now
        try:
            await self.publish(self.mirror.topics.frigate_on_connect, b"")
        except Exception:
            log.warning("frigate_activity_request_failed", exc_info=True)

    async def _imports(self, importer: HistoryImporter) -> None:
        first = self.settings.import_retry_s
        delay = first
        while True:
            await self._import_wanted.wait()
            self._import_wanted.clear()
            full, self._import_full = self._import_full, False
            try:
                await importer.run(*await self._window(full))
                delay = first
                continue
            except HistoryError as exc:
                log.warning("frigate_history_import_failed", reason=exc.reason, error=str(exc))
            except Exception:  # task boundary: keep lookout running, retry later
                log.exception("frigate_history_import_crashed")
                importer.status.state, importer.status.error = "retrying", "internal error"
            # Retry the same kind of import after a backoff, or sooner if asked again.
            self._import_full = self._import_full or full
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._import_wanted.wait()
            self._import_wanted.set()
            delay = min(max(RETRY_MAX_S, first), delay * 2)

    async def _window(self, full: bool) -> tuple[float, float]:
        now = self.clock()
        earliest = now - self.retention_days * DAY_S
        if full:
            return earliest, now
        bounds = await self.store.bounds()
        starts = [
            s
            for s in (
                bounds.latest_start - GAP_MARGIN_S if bounds.latest_start else None,
                bounds.oldest_open_start,
            )
            if s is not None
        ]
        return max(earliest, min(starts, default=earliest)), now

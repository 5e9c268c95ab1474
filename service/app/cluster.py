"""One worker of a cluster: its lease, its takeovers, its roles and its presence.

Every ``takeover_s / 10`` seconds, and at once when another worker says it handed
something over, the worker looks for what dead workers left and takes it:

* journaled requests that never got their terminal reply (``FOR UPDATE SKIP LOCKED``
  splits them among the workers that look at once; each re-run says ``attempt``),
* unfinished watches, resumed with their deadline (up to ``watch.max_active`` here),
* the roles nobody holds: the history writer (Frigate's events, reviews and updates go
  into the store from one worker; the others keep the patches of the last minutes and
  write them when they take the role) and the Home Assistant bridge,
* the broker sessions of dead workers: requests the broker had given a worker that
  died before it journaled them are waiting there (mosquitto keeps routing a share of
  the group's messages to a member's offline session). The sweep resumes that session,
  runs what it finds through this worker's journal and dispatcher, and discards it.

Two MQTT connections per worker: the main one, whose will is the worker's own
``<prefix>/worker/<name>/status``, and a presence connection whose will is the service's
``<prefix>/status`` with a delay of ``takeover_s``. A surviving worker connects to a dead
worker's presence session within that delay, which cancels the will (MQTT 5), so the
service stays ``online`` while any worker lives and turns ``offline`` when the last
one died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from service.mqtt import (
    ClusterControl,
    Dispatcher,
    Journal,
    Message,
    MqttBus,
    TopicMap,
    bind_cancels,
)
from service.settings import Settings
from service.store import ROLES, EventStore, Lease
from service.watch import ClusterWatches, WatchEngine

log = structlog.get_logger(__name__)

SWEEP_TIMEOUT_S = 30.0
LEASE_LOST_EXIT = 75
"""Exit code of a worker that lost its lease (EX_TEMPFAIL: its supervisor restarts it)."""

RoleTask = Callable[[], Coroutine[Any, Any, Any]]


@dataclass
class ClusterNode:
    """What a worker of a cluster does besides serving (see the module docstring)."""

    settings: Settings
    topics: TopicMap
    lease: Lease
    journal: Journal
    dispatcher: Dispatcher
    watches: WatchEngine
    events: EventStore
    bus: MqttBus
    presence: MqttBus
    role_tasks: dict[str, list[RoleTask]] = field(default_factory=dict)
    """What each role runs, started when this worker takes the role."""
    counts: dict[str, int] = field(
        default_factory=lambda: {"requests_taken_over": 0, "sessions_swept": 0}
    )
    control: ClusterControl = field(init=False)
    cluster_watches: ClusterWatches = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _sweeping: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        """This worker's name."""
        return self.lease.name

    async def join(self) -> None:
        """Register in the database; from here on what this worker journals is its own."""
        await self.lease.open()
        self.control = ClusterControl(self.lease, timeout_s=self.settings.cluster.takeover_s / 3)
        self.journal.worker_id = self.lease.worker_id
        self.cluster_watches = ClusterWatches(self.control)
        self.cluster_watches.bind(self.watches)
        bind_cancels(self.control, self.dispatcher, self.journal)
        self.control.on_broadcast(lambda _message: self._wake.set())
        # Until this worker is the writer it holds what it would write (see Standby).
        self.events.stand_by(max(120.0, 8 * self.settings.cluster.takeover_s))

    async def run(self) -> None:
        """Check the lease, take over what dead workers left, run the roles held."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.lease.run(self._lease_lost), name="cluster-lease")
            every = self.settings.cluster.takeover_s / 10
            while True:
                await self._look(tg)
                # PostgreSQL has no event for "a lock was freed by a dead connection":
                # a look every takeover_s/10 finds it; a hand-over wakes us at once.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await self._wake.wait()
                self._wake.clear()

    async def _look(self, tg: asyncio.TaskGroup) -> None:
        steps: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("roles", lambda: self._take_roles(tg)),
            ("requests", self._take_requests),
            ("watches", self._take_watches),
            ("sessions", lambda: self._take_sessions(tg)),
        ]
        for step, run in steps:
            try:
                await run()
            except Exception:  # one failed look must not stop the next
                log.exception("cluster_takeover_failed", step=step)

    async def _take_roles(self, tg: asyncio.TaskGroup) -> None:
        for role in ROLES:
            if role in self.lease.roles or not await self.lease.try_role(role):
                continue
            if role == "history_writer":
                written = self.events.take_over()
                log.info("history_writer_taken", worker=self.name, rewritten=written)
            for make in self.role_tasks.get(role, []):
                tg.create_task(make(), name=f"role:{role}")

    async def _take_requests(self) -> None:
        entries = await self.journal.claim_orphans(self.dispatcher.capacity())
        if entries:
            self.counts["requests_taken_over"] += len(entries)
            log.info("requests_taken_over", count=len(entries))
            self.dispatcher.claim(entries)

    async def _take_watches(self) -> None:
        await self.cluster_watches.adopt(self.watches)

    async def _take_sessions(self, tg: asyncio.TaskGroup) -> None:
        for dead_id, name, client_id in await self.lease.claim_sweep():
            if dead_id not in self._sweeping:
                self._sweeping.add(dead_id)
                tg.create_task(self._sweep(dead_id, name, client_id), name=f"sweep:{name}")

    async def _sweep(self, dead_id: int, name: str, client_id: str) -> None:
        """Take what a dead worker's broker sessions hold, then discard them."""
        try:
            # First its presence: connecting before the will delay cancels the service's
            # `offline` that the dead worker's will would publish.
            await self._discard_session(f"{client_id}-presence")
            async with asyncio.timeout(SWEEP_TIMEOUT_S):
                taken = await self._drain_session(name, client_id)
            await self._discard_session(client_id)
            await self.lease.swept(dead_id)
            self.counts["sessions_swept"] += 1
            log.info("session_swept", worker=name, requests=taken)
        except TimeoutError:
            log.warning("session_sweep_timed_out", worker=name)
        except Exception:
            log.exception("session_sweep_failed", worker=name)
        finally:
            self._sweeping.discard(dead_id)

    async def _drain_session(self, name: str, client_id: str) -> int:
        marker = f"{self.topics.prefix}/worker/{name}/sweep"
        sweeper = MqttBus(
            self.settings.mqtt, self.topics, [(marker, 1)],
            announce=False, persistent=True, client_id=client_id,
        )  # fmt: skip
        runner = asyncio.create_task(sweeper.run(), name=f"sweep-bus:{name}")
        pending: set[int] = set()
        settled = asyncio.Event()
        settled.set()
        taken = 0
        try:
            await sweeper.wait_connected()
            # No new requests for this session; what it holds comes before the marker.
            await sweeper.unsubscribe(self.dispatcher.request_filters())
            await sweeper.publish(marker, b"", qos=1)
            async for message in sweeper.messages():
                if message.topic == marker:
                    message.ack()
                    break
                if self.topics.request_kind(message.topic) is None:
                    message.ack()  # Frigate's and frames: this worker has its own copies
                    continue
                taken += 1
                pending.add(taken)
                settled.clear()
                self.dispatcher.dispatch(_acked(message, taken, pending, settled))
            # Acked once journaled: then the session may go.
            await settled.wait()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        return taken

    async def _discard_session(self, client_id: str) -> None:
        """Connect with a clean start and no session expiry: the broker drops the session."""
        bus = MqttBus(
            self.settings.mqtt, self.topics, [],
            announce=False, persistent=False, client_id=client_id,
        )  # fmt: skip
        runner = asyncio.create_task(bus.run(), name=f"discard:{client_id}")
        try:
            await bus.wait_connected(timeout=SWEEP_TIMEOUT_S)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def _lease_lost(self, reason: str) -> None:
        # The others may take this worker's requests and watches over any moment now: it
        # stops as if killed (no replies, no hand-overs), and its supervisor restarts it.
        log.error("cluster_lease_lost", worker=self.name, reason=reason)
        sys.stdout.flush()
        os._exit(LEASE_LOST_EXIT)

    async def others_alive(self) -> bool:
        """Whether another worker is alive now."""
        return bool(set(await self.lease.live_ids()) - {self.lease.worker_id})

    async def stop_taking_requests(self) -> None:
        """A graceful stop while others live: leave the shared subscription first."""
        try:
            if await self.others_alive():
                await self.bus.unsubscribe(self.dispatcher.request_filters())
        except Exception:
            log.exception("cluster_unsubscribe_failed")

    async def leave(self) -> None:
        """Hand everything over at once (after the watches stopped and the writer flushed)."""
        try:
            released = await self.watches.store.release()
            log.info("watches_released", count=released)
        except Exception:
            log.exception("watches_release_failed")
        await self.lease.close()
        await self.control.broadcast("released", {"worker": self.name})
        try:
            last = not await self.lease.live_ids()
        except Exception:  # noqa: BLE001 - without the database, assume nobody is left
            last = True
        # The last one out says the service is offline; the others leave it online.
        self.presence.offline_on_stop = last
        log.info("cluster_left_service", last=last)

    async def health(self) -> dict[str, Any]:
        """The `cluster` section of `health`: workers, roles, watch owners, takeovers."""
        try:
            workers = await self.lease.workers()
            names = {w.id: w.name for w in workers}
            owners = await self.watches.store.owners()
            roles = await self.lease.role_holders()
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            return {"worker": self.name, "error": f"{type(exc).__name__}: {exc}"[:200]}
        return {
            "worker": self.name,
            "worker_id": self.lease.worker_id,
            "workers": [
                {
                    "name": w.name,
                    "id": w.id,
                    "host": w.host,
                    "up_s": round(time.time() - w.started_at, 1),
                }
                for w in workers
            ],
            "history_writer": roles.get("history_writer"),
            "homeassistant_bridge": roles.get("homeassistant"),
            "watch_owners": {
                job: names.get(owner) if owner else None for job, owner in owners.items()
            },
            "roles_here": sorted(self.lease.roles),
            **self.counts,
            "watches_taken_over": self.cluster_watches.adopted,
        }

    def holds(self, role: str) -> bool:
        """Whether this worker holds ``role`` now."""
        return role in self.lease.roles


def _acked(message: Message, key: int, pending: set[int], settled: asyncio.Event) -> Message:
    """``message`` whose ack also tells the sweep it was journaled."""

    def ack() -> None:
        message.ack()
        pending.discard(key)
        if not pending:
            settled.set()

    return replace(message, _ack=ack)

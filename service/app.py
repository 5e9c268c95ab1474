"""The composition root: build every component, route table and long-lived task.

Shutdown order matters: requests are stopped first (each still connected, so each can
send its `shutting_down` reply), then the bus says `offline` and disconnects, then the
store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__
from service.bus import MqttBus
from service.db import create_engine, create_tables
from service.health import HealthReporter, HealthRequest
from service.journal import Journal
from service.router import Dispatcher, MessageRoute, RequestRoute
from service.settings import Settings
from service.topics import RequestKind, TopicMap

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 3.0
JOURNAL_KEEP_S = 7 * 86_400.0


@dataclass
class Runtime:
    """Everything a running lookout holds; tests build one to poke at its parts."""

    settings: Settings
    topics: TopicMap
    engine: AsyncEngine
    journal: Journal
    health: HealthReporter
    bus: MqttBus
    dispatcher: Dispatcher
    started_at: float = field(default_factory=time.time)


async def build(settings: Settings) -> Runtime:
    """Create the store and wire the route table."""
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    engine = create_engine(settings.store.url)
    await create_tables(engine)
    journal = Journal(engine)
    health = HealthReporter()
    request_routes = [
        RequestRoute(RequestKind.HEALTH, HealthRequest, health.handle),
    ]
    message_routes: list[MessageRoute] = []
    bus_ref: dict[str, MqttBus] = {}

    class _LatePublisher:
        # The dispatcher needs a publisher and the bus needs the dispatcher's
        # subscriptions; this breaks the cycle without a mutable global.
        async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
            await bus_ref["bus"].publish(topic, payload, **kwargs)

    dispatcher = Dispatcher(_LatePublisher(), topics, journal, request_routes, message_routes)
    bus = MqttBus(settings.mqtt, topics, dispatcher.subscriptions(), dispatcher.overflow)
    bus_ref["bus"] = bus
    health.register("broker", lambda: _broker_health(bus))
    health.register("requests", lambda: _request_health(dispatcher))
    return Runtime(settings, topics, engine, journal, health, bus, dispatcher)


def _broker_health(bus: MqttBus) -> dict[str, Any]:
    s = bus.state
    return {
        "connected": s.connected,
        "connects": s.connects,
        "last_connected_at": s.last_connected_at,
        "last_error": s.last_error,
        "inbox_depth": bus.inbox_depth(),
        "dropped": s.dropped,
    }


def _request_health(dispatcher: Dispatcher) -> dict[str, Any]:
    st = dispatcher.stats
    return {
        "received": st.requests,
        "duplicates": st.duplicates,
        "overloaded": st.overloaded,
        "handler_errors": st.handler_errors,
        "by_kind": dict(st.by_kind),
    }


async def serve(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; then stop requests, the bus and the store in that order."""
    replay = await runtime.journal.unfinished()
    if replay:
        log.info("journal_replay", count=len(replay))
    with contextlib.suppress(Exception):
        purged = await runtime.journal.purge(JOURNAL_KEEP_S)
        if purged:
            log.info("journal_purged", count=purged)
    async with asyncio.TaskGroup() as tg:
        bus_task = tg.create_task(runtime.bus.run(), name="bus")
        dispatch_task = tg.create_task(
            runtime.dispatcher.run(runtime.bus.messages(), replay), name="dispatch"
        )
        ready_task = tg.create_task(_announce_ready(runtime), name="announce-ready")
        await stop.wait()
        log.info("shutdown_started")
        ready_task.cancel()
        dispatch_task.cancel()
        await asyncio.wait([dispatch_task], timeout=SHUTDOWN_GRACE_S)
        bus_task.cancel()
    await runtime.engine.dispose()
    log.info("shutdown_complete")


async def _announce_ready(runtime: Runtime) -> None:
    await runtime.bus.wait_connected()
    log.info(
        "lookout_online",
        version=__version__,
        startup_s=round(time.time() - runtime.started_at, 3),
        status_topic=runtime.topics.status,
    )


async def main(settings: Settings) -> int:
    """Run the worker until SIGTERM or Ctrl-C; return the process exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await build(settings)
    log.info(
        "lookout_starting",
        version=__version__,
        broker=f"{settings.mqtt.host}:{settings.mqtt.port}",
        prefix=settings.mqtt.topic_prefix,
        protocol=settings.mqtt.protocol,
    )
    await serve(runtime, stop)
    return 0

"""The composition root: build every component, route table and long-lived task.

Shutdown order matters: requests are stopped first (each still connected, so each can
send its `shutting_down` reply), then the event writer flushes, then the bus says
`offline` and disconnects, then the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__
from service.chat import ChatCancelRequest, ChatRequest, ChatService
from service.frames import FrameStore
from service.frigate import FrigateMirror, Upkeep
from service.homeassistant import HomeAssistantBridge
from service.llm import Providers
from service.mqtt import (
    Admission,
    Dispatcher,
    HealthReporter,
    HealthRequest,
    Journal,
    Message,
    MessageRoute,
    MqttBus,
    RequestKind,
    RequestRoute,
    TopicMap,
    filter_matches,
)
from service.settings import Settings
from service.store import ConversationStore, EventStore, create_engine, create_tables, dispose
from service.tools import (
    ToolDeps,
    ToolRegistry,
    ToolRequest,
    ToolService,
    build_registry,
    local_zone,
)
from service.watch import WatchEngine, WatchRequest

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 3.0
JOURNAL_KEEP_S = 7 * 86_400.0
HOUSEKEEPING_EVERY_S = 3600.0


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
    events: EventStore
    frigate: FrigateMirror
    frames: FrameStore
    providers: Providers
    registry: ToolRegistry
    conversations: ConversationStore
    watches: WatchEngine | None = None
    bridge: HomeAssistantBridge | None = None
    started_at: float = field(default_factory=time.time)


class _LatePublisher:
    """Forwards publishes to the bus once it exists.

    The dispatcher needs a publisher before the bus exists, and the bus needs the
    dispatcher's subscriptions.
    """

    bus: MqttBus | None = None

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        assert self.bus is not None  # noqa: S101 - set in build() before anything runs
        await self.bus.publish(topic, payload, **kwargs)


async def build(settings: Settings) -> Runtime:
    """Create the store and wire the route table."""
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    engine = create_engine(settings.store.url)
    await create_tables(engine)
    journal = Journal(engine)
    events = EventStore(engine)
    frigate = FrigateMirror(settings.frigate, topics, events)
    frames = FrameStore(max_bytes=settings.limits.max_frame_bytes)
    providers = Providers(settings.llm)
    registry = build_registry(settings)
    conversations = ConversationStore(engine, settings.chat.conversation_ttl_s)
    publisher = _LatePublisher()
    watches = WatchEngine(settings, topics, engine, frigate, frames, providers, publisher)
    deps = ToolDeps(
        settings=settings,
        topics=topics,
        frigate=frigate,
        events=events,
        frames=frames,
        publisher=publisher,
        providers=providers,
        tz=local_zone(settings.chat.timezone),
        watches=watches,
    )
    health = HealthReporter()
    bridge = HomeAssistantBridge(settings.homeassistant, topics)
    chat = ChatService(settings, providers, registry, conversations, frigate, deps)
    tools = ToolService(settings, registry, deps)
    request_routes = [
        RequestRoute(RequestKind.HEALTH, HealthRequest, health.handle),
        RequestRoute(
            RequestKind.CHAT, ChatRequest, chat.handle, limit=settings.chat.max_concurrent
        ),
        RequestRoute(RequestKind.CHAT_CANCEL, ChatCancelRequest, chat.cancel, control=True),
        RequestRoute(RequestKind.TOOL, ToolRequest, tools.handle),
        RequestRoute(RequestKind.WATCH, WatchRequest, watches.handle),
    ]
    dispatcher = Dispatcher(
        publisher,
        topics,
        journal,
        request_routes,
        _message_routes(topics, frigate, frames) + _bridge_routes(bridge),
        admission=Admission(settings).check,
        protected_prefixes=(settings.homeassistant.discovery_prefix,),
    )
    chat.dispatcher = dispatcher
    bus = MqttBus(settings.mqtt, topics, dispatcher.subscriptions(), dispatcher.overflow)
    publisher.bus = bus
    runtime = Runtime(
        settings, topics, engine, journal, health, bus, dispatcher, events, frigate, frames,
        providers, registry, conversations, watches, bridge,
    )  # fmt: skip
    _register_health(runtime)
    return runtime


def _message_routes(
    topics: TopicMap, frigate: FrigateMirror, frames: FrameStore
) -> list[MessageRoute]:
    def frigate_handler(message: Message) -> None:
        frigate.handle(message.topic, message.payload, message.retain)

    def frame_handler(message: Message) -> None:
        captures = topics.frame.match(message.topic)
        if captures is not None:
            frames.put(captures["camera"], message.payload, retained=message.retain)

    def snapshot_handler(message: Message) -> None:
        captures = topics.frigate_snapshot.match(message.topic)
        if captures is not None:
            frames.put(
                captures["camera"],
                message.payload,
                source="snapshot",
                label=captures["label"],
                retained=message.retain,
            )

    routes = [
        # Frames are QoS 0 on purpose: a stale frame is worth nothing, and the broker must
        # not queue them for lookout while it is away.
        MessageRoute(
            topics.frame.filter,
            0,
            lambda t: topics.frame.match(t) is not None,
            frame_handler,
            "frame",
        ),
        MessageRoute(
            topics.frigate_snapshot.filter,
            0,
            lambda t: topics.frigate_snapshot.match(t) is not None,
            snapshot_handler,
            "snapshot",
        ),
    ]
    for topic_filter, qos in frigate.subscriptions():
        routes.append(
            MessageRoute(
                topic_filter,
                qos,
                functools.partial(filter_matches, topic_filter),
                frigate_handler,
                "frigate",
            )
        )
    return routes


def _bridge_routes(bridge: HomeAssistantBridge) -> list[MessageRoute]:
    return [
        MessageRoute(f, qos, functools.partial(filter_matches, f), bridge.handle, "homeassistant")
        for f, qos in bridge.subscriptions()
    ]


def _register_health(runtime: Runtime) -> None:
    bus, dispatcher, h = runtime.bus, runtime.dispatcher, runtime.health
    h.register(
        "broker",
        lambda: {
            "connected": bus.state.connected,
            "connects": bus.state.connects,
            "last_connected_at": bus.state.last_connected_at,
            "last_error": bus.state.last_error,
            "inbox_depth": bus.inbox_depth(),
            "dropped": bus.state.dropped,
        },
    )
    h.register(
        "requests",
        lambda: {
            "received": dispatcher.stats.requests,
            "duplicates": dispatcher.stats.duplicates,
            "overloaded": dispatcher.stats.overloaded,
            "handler_errors": dispatcher.stats.handler_errors,
            "by_kind": dict(dispatcher.stats.by_kind),
        },
    )
    h.register(
        "frigate",
        lambda: {
            "available": runtime.frigate.available(),
            "cameras": [c.id for c in runtime.frigate.cameras()],
            "messages": runtime.frigate.stats(),
            "history_import": (
                runtime.frigate.importer.status.to_dict() if runtime.frigate.importer else None
            ),
        },
    )
    h.register("store", runtime.events.stats)
    if runtime.watches is not None:
        h.register("watches", runtime.watches.stats)
    h.register("frames", runtime.frames.stats)
    h.register(
        "llm",
        lambda: {
            "chat": runtime.providers.chat.name if runtime.providers.chat else None,
            "vision": runtime.providers.vision.name if runtime.providers.vision else None,
        },
    )


async def serve(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; then stop requests, the writer, the bus and the store."""
    # Cameras the history knows, before any request can ask about them.
    await runtime.events.start()
    for camera in await runtime.events.cameras():
        runtime.frigate.registry.learn(camera)
    replay = await runtime.journal.unfinished()
    if replay:
        log.info("journal_replay", count=len(replay))
    await runtime.bus.retain(
        runtime.topics.tools, json.dumps({"tools": runtime.registry.schemas()}).encode()
    )
    async with asyncio.TaskGroup() as tg:
        writer_task = tg.create_task(runtime.events.run(), name="event-writer")
        # Purges history daily and refreshes SQLite's statistics; ends with events.close().
        retention_task = tg.create_task(
            runtime.events.run_retention(runtime.settings.store.retention_days),
            name="event-retention",
        )
        bus_task = tg.create_task(runtime.bus.run(), name="bus")
        dispatch_task = tg.create_task(
            runtime.dispatcher.run(runtime.bus.messages(), replay), name="dispatch"
        )
        watch_task = (
            tg.create_task(runtime.watches.run(), name="watches") if runtime.watches else None
        )
        side_tasks = [
            tg.create_task(_announce_ready(runtime), name="announce-ready"),
            tg.create_task(_import_frigate_config(runtime), name="frigate-config"),
            tg.create_task(_frigate_upkeep(runtime), name="frigate-upkeep"),
            tg.create_task(_housekeeping(runtime), name="housekeeping"),
            tg.create_task(_warm_llm_import(runtime), name="warm-openai"),
            # A side task, so it stops while the bus can still carry its last publish.
            *(
                [tg.create_task(runtime.bridge.run(runtime.bus), name="homeassistant")]
                if runtime.bridge
                else []
            ),
        ]
        await stop.wait()
        log.info("shutdown_started")
        watchdog = asyncio.create_task(_shutdown_watchdog(), name="shutdown-watchdog")
        for task in side_tasks:
            task.cancel()
        dispatch_task.cancel()
        await asyncio.wait([dispatch_task], timeout=SHUTDOWN_GRACE_S)
        # Watches stop while the bus still carries their last states.
        if watch_task is not None:
            watch_task.cancel()
            await asyncio.wait([watch_task], timeout=SHUTDOWN_GRACE_S)
        with contextlib.suppress(Exception):
            await runtime.events.close()
        writer_task.cancel()
        retention_task.cancel()
        bus_task.cancel()
    watchdog.cancel()
    await runtime.providers.aclose()
    await dispose(runtime.engine)
    log.info("shutdown_complete")


async def _shutdown_watchdog(after_s: float = 4.0) -> None:
    """Name what still runs when a shutdown takes too long, so a hang is diagnosable."""
    await asyncio.sleep(after_s)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            log.warning("shutdown_slow_task", task=task.get_name(), awaiting=_await_chain(task))


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a suspended task waits, through every coroutine it awaits."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return chain


async def _announce_ready(runtime: Runtime) -> None:
    await runtime.bus.wait_connected()
    log.info(
        "lookout_online",
        version=__version__,
        startup_s=round(time.time() - runtime.started_at, 3),
        status_topic=runtime.topics.status,
    )


async def _warm_llm_import(runtime: Runtime) -> None:
    """Import openai (~0.5 s) in a thread once online, so the first chat does not pay it."""
    if not runtime.providers.by_name:
        return
    await runtime.bus.wait_connected()
    await asyncio.to_thread(importlib.import_module, "openai")


async def _frigate_upkeep(runtime: Runtime) -> None:
    """Ends what Frigate left open, imports its history, asks for its camera states."""

    async def publish(topic: str, payload: bytes) -> None:
        await runtime.bus.publish(topic, payload, qos=1)

    upkeep = Upkeep(
        runtime.frigate,
        runtime.events,
        retention_days=runtime.settings.store.retention_days,
        publish=publish,
    )
    await upkeep.run(runtime.bus.next_connection)


async def _import_frigate_config(runtime: Runtime) -> None:
    try:
        await runtime.frigate.import_api_config()
    except Exception:
        log.exception("frigate_config_import_failed")


async def _housekeeping(runtime: Runtime) -> None:
    """Expiry of conversations and the journal, hourly (history has its own retention task)."""
    while True:
        jobs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("conversations", runtime.conversations.purge),
            ("journal", lambda: runtime.journal.purge(JOURNAL_KEEP_S)),
        ]
        for name, job in jobs:
            try:
                removed = await job()
                if removed:
                    log.info("housekeeping_purged", table=name, removed=str(removed))
            except Exception:
                log.exception("housekeeping_failed", table=name)
        await asyncio.sleep(HOUSEKEEPING_EVERY_S)


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

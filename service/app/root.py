"""The composition root: build every component, route table and long-lived task.

Shutdown order matters: requests are stopped first (each still connected, so each can
send its `shutting_down` reply), then the event writer flushes, then the bus says
`offline` and disconnects, then the store is closed. A cluster's worker also leaves the
shared subscription first (while others live) and hands its watches and roles over
before it disconnects (see :mod:`service.app.cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
from collections.abc import Callable

import structlog

from service import __version__
from service.app.background import (
    announce_ready,
    frigate_upkeep,
    housekeeping,
    import_frigate_config,
    shutdown_watchdog,
    warm_llm_import,
)
from service.app.cluster import ClusterNode
from service.app.runtime import LatePublisher, Runtime
from service.chat import ChatCancelRequest, ChatRequest, ChatService
from service.frames import FrameStore
from service.frigate import FrigateMirror
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
from service.settings import Settings, resolve_worker_name
from service.store import (
    ConversationStore,
    EventStore,
    Lease,
    create_engine,
    create_tables,
    dispose,
)
from service.tools import (
    ToolDeps,
    ToolRequest,
    ToolService,
    build_registry,
    local_zone,
)
from service.watch import WatchEngine, WatchRequest

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 3.0


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
    publisher = LatePublisher()
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
    clustered = settings.cluster.enabled
    worker = resolve_worker_name(settings.cluster) if clustered else None
    holds_bridge: list[Callable[[], bool]] = []
    bridge_handle = _bridge_handler(bridge, holds_bridge)
    # Home Assistant's Frigate sensor follows Frigate's availability as it changes.
    on_frigate_available = bridge_handle if settings.homeassistant.discovery else None
    dispatcher = Dispatcher(
        publisher,
        topics,
        journal,
        request_routes,
        _message_routes(topics, frigate, frames, on_frigate_available)
        + _bridge_routes(bridge, bridge_handle),
        admission=Admission(settings).check,
        protected_prefixes=(
            settings.homeassistant.discovery_prefix,
            *([f"{topics.prefix}/worker"] if clustered else []),
        ),
        share_group=settings.cluster.share_group if clustered else None,
    )
    chat.dispatcher = dispatcher
    client_id = f"{settings.mqtt.client_id}-{worker}" if worker else None
    bus = MqttBus(
        settings.mqtt, topics, dispatcher.subscriptions(), dispatcher.overflow,
        client_id=client_id,
        status_topic=f"{topics.prefix}/worker/{worker}/status" if worker else None,
        also_online=(topics.status,) if worker else (),
    )  # fmt: skip
    publisher.bus = bus
    runtime = Runtime(
        settings, topics, engine, journal, health, bus, dispatcher, events, frigate, frames,
        providers, registry, conversations, watches, bridge,
    )  # fmt: skip
    if worker is not None and client_id is not None:
        runtime.cluster = await _join_cluster(runtime, worker, client_id)
        holds_bridge.append(
            lambda: runtime.cluster is not None and runtime.cluster.holds("homeassistant")
        )
    _register_health(runtime)
    return runtime


async def _join_cluster(runtime: Runtime, worker: str, client_id: str) -> ClusterNode:
    """Register this worker and wire what only a cluster's worker does."""
    settings, topics = runtime.settings, runtime.topics
    assert runtime.watches is not None  # noqa: S101 - built above
    presence = MqttBus(
        settings.mqtt, topics, [],
        client_id=f"{client_id}-presence",
        will_delay_s=round(settings.cluster.takeover_s),
    )  # fmt: skip
    lease = Lease(
        runtime.engine, settings.store.url, worker, client_id, settings.cluster.takeover_s
    )
    node = ClusterNode(
        settings, topics, lease, runtime.journal, runtime.dispatcher, runtime.watches,
        runtime.events, runtime.bus, presence,
    )  # fmt: skip
    node.role_tasks = {
        "history_writer": [
            lambda: frigate_upkeep(runtime),
            lambda: runtime.events.run_retention(settings.store.retention_days),
        ],
        "homeassistant": [lambda: bridge.run(runtime.bus)] if (bridge := runtime.bridge) else [],
    }
    await node.join()
    runtime.health.register_async("cluster", node.health)
    return node


def _message_routes(
    topics: TopicMap,
    frigate: FrigateMirror,
    frames: FrameStore,
    on_frigate_available: Callable[[Message], None] | None,
) -> list[MessageRoute]:
    def frigate_handler(message: Message) -> None:
        frigate.handle(message.topic, message.payload, message.retain)
        if message.topic == topics.frigate_available and on_frigate_available is not None:
            # A message goes to the first matching route only, and this one is Frigate's.
            on_frigate_available(message)

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


def _bridge_handler(
    bridge: HomeAssistantBridge, holds: list[Callable[[], bool]]
) -> Callable[[Message], None]:
    def handle(message: Message) -> None:
        # In a cluster one worker runs the bridge: the others' copies of its topics are
        # not theirs to act on (each question would become one chat per worker).
        if all(check() for check in holds):
            bridge.handle(message)

    return handle


def _bridge_routes(
    bridge: HomeAssistantBridge, handle: Callable[[Message], None]
) -> list[MessageRoute]:
    return [
        MessageRoute(f, qos, functools.partial(filter_matches, f), handle, "homeassistant")
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
    node = runtime.cluster
    # A cluster's worker replays nothing blindly: it claims what dead workers left.
    replay = await runtime.journal.unfinished() if node is None else []
    if replay:
        log.info("journal_replay", count=len(replay))
    await runtime.bus.retain(
        runtime.topics.tools, json.dumps({"tools": runtime.registry.schemas()}).encode()
    )
    async with asyncio.TaskGroup() as tg:
        writer_task = tg.create_task(runtime.events.run(), name="event-writer")
        # Purges history daily and refreshes SQLite's statistics; ends with events.close().
        # In a cluster it runs on the history writer only (see ClusterNode's roles).
        retention_task = (
            tg.create_task(
                runtime.events.run_retention(runtime.settings.store.retention_days),
                name="event-retention",
            )
            if node is None
            else None
        )
        bus_task = tg.create_task(runtime.bus.run(), name="bus")
        presence_task = (
            tg.create_task(node.presence.run(), name="presence") if node is not None else None
        )
        dispatch_task = tg.create_task(
            runtime.dispatcher.run(runtime.bus.messages(), replay), name="dispatch"
        )
        watch_task = (
            tg.create_task(runtime.watches.run(), name="watches") if runtime.watches else None
        )
        side_tasks = [
            tg.create_task(announce_ready(runtime), name="announce-ready"),
            tg.create_task(import_frigate_config(runtime), name="frigate-config"),
            tg.create_task(housekeeping(runtime), name="housekeeping"),
            tg.create_task(warm_llm_import(runtime), name="warm-openai"),
        ]
        if node is not None:
            # Roles (history writer, Home Assistant bridge) run inside the node's task.
            side_tasks.append(tg.create_task(node.run(), name="cluster"))
        else:
            side_tasks.append(tg.create_task(frigate_upkeep(runtime), name="frigate-upkeep"))
            if runtime.bridge:
                # A side task, so it stops while the bus can still carry its last publish.
                bridge = tg.create_task(runtime.bridge.run(runtime.bus), name="homeassistant")
                side_tasks.append(bridge)
        await stop.wait()
        log.info("shutdown_started")
        watchdog = asyncio.create_task(shutdown_watchdog(), name="shutdown-watchdog")
        if node is not None:
            await node.stop_taking_requests()
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
        if node is not None:
            # Watches and roles go to the others at once, now that they stopped here.
            await node.leave()
        writer_task.cancel()
        if retention_task is not None:
            retention_task.cancel()
        if presence_task is not None:
            presence_task.cancel()
        bus_task.cancel()
    watchdog.cancel()
    await runtime.providers.aclose()
    await dispose(runtime.engine)
    log.info("shutdown_complete")


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

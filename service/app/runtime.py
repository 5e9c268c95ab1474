"""What a running worker holds (:class:`Runtime`), shared by the root and its tasks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.app.cluster import ClusterNode
from service.frames import FrameStore
from service.frigate import FrigateMirror
from service.homeassistant import HomeAssistantBridge
from service.llm import Providers
from service.mqtt import Dispatcher, HealthReporter, Journal, MqttBus, TopicMap
from service.settings import Settings
from service.store import ConversationStore, EventStore
from service.tools import ToolRegistry
from service.watch import WatchEngine


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
    cluster: ClusterNode | None = None
    started_at: float = field(default_factory=time.time)


class LatePublisher:
    """Forwards publishes to the bus once it exists.

    The dispatcher needs a publisher before the bus exists, and the bus needs the
    dispatcher's subscriptions.
    """

    bus: MqttBus | None = None

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        """Publish through the bus."""
        assert self.bus is not None  # noqa: S101 - set in build() before anything runs
        await self.bus.publish(topic, payload, **kwargs)

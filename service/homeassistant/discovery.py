"""Home Assistant MQTT discovery: the settings, the topics and the device payload.

lookout shows up in Home Assistant as one device, announced with device-based discovery
(one retained JSON document on ``<discovery_prefix>/device/<node_id>/config``, HA 2024.11+).
Everything here is pure: :class:`~service.homeassistant.bridge.HomeAssistantBridge` does the I/O.

The bridge's own topics live under ``<prefix>/<user>/ha/`` where ``<user>`` is the
caller Home Assistant's questions are asked as: the third level ``ha`` is no request
kind, so none of them can be mistaken for a request, and they sit next to that user's
default reply topics.

This module imports nothing from :mod:`service.settings`, so the settings module can
import :class:`HomeAssistantSettings` from here without a cycle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from service.mqtt import TopicMap
from service.settings import HomeAssistantSettings

STATE_MAX = 255
"""Home Assistant refuses entity states longer than this."""

ALERT_EVENT_TYPES = ("condition_met", "timeout", "error", "cancelled", "alert")
"""Event types of the watch-alert entity: the watch's ``end_reason``, else ``alert``."""

ENTITY_ID_KEYS = ("object_id", "default_entity_id")
"""How each entity asks for its entity id, so that it is ``<platform>.<node_id>_<key>``
whatever the device is named. Home Assistant up to 2025.9 knows only ``object_id`` (the
object id alone) and drops ``default_entity_id`` as an unknown key; 2025.10 added
``default_entity_id`` (the whole entity id), which wins when both are given, and
deprecated ``object_id``: it logs a warning for ``object_id`` only when
``default_entity_id`` is missing, and says that ``object_id`` stops working in 2026.4.
Home Assistant's discovery schemas drop keys they do not know, so sending both is
understood by every release from 2024.11 (device-based discovery) on."""

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")
_ENTITY_UNSAFE = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True, slots=True)
class HaTopics:
    """Every topic of the Home Assistant bridge, derived from the configured prefixes."""

    config: str
    """The device discovery document (retained)."""
    ha_status: str
    """Home Assistant's birth/will topic."""
    ask: str
    """Command topic of the `text` and `notify` entities: a question."""
    question: str
    """State of the `text` entity: the last question (retained)."""
    answer: str
    """State of the answer sensor (retained, at most 255 characters)."""
    answer_attributes: str
    """The full answer, tool calls and conversation id (retained JSON)."""
    replies: str
    """Where lookout sends the replies to the bridge's own requests."""
    alert_event: str
    """The event entity's topic: one message per watch alert."""
    snapshot: str
    """The image entity's topic: the latest alert's JPEG (retained)."""
    watches: str
    """Number of active watches (retained)."""
    watches_attributes: str
    """The active watches as a list (retained JSON)."""
    cancel_watches: str
    """The button's command topic."""
    llm: str
    """LLM connectivity, ``ON``/``OFF`` (retained)."""
    llm_attributes: str
    """What lookout's health said about the model servers (retained JSON)."""
    frigate: str
    """Frigate's availability as lookout sees it, ``ON``/``OFF`` (retained): ``OFF`` until
    Frigate has said ``online``, so the sensor is never ``unknown`` without a Frigate."""
    chat_request: str
    """lookout's own chat request topic for the bridge's user."""
    watch_request: str
    """lookout's own watch request topic for the bridge's user."""
    health_request: str
    """lookout's own health request topic for the bridge's user."""

    @classmethod
    def build(cls, settings: HomeAssistantSettings, topics: TopicMap) -> HaTopics:
        """Derive every topic from the discovery settings and lookout's topic map."""
        base = f"{topics.prefix}/{settings.user}/ha"
        user = settings.user
        return cls(
            config=f"{settings.discovery_prefix}/device/{node_id(settings, topics)}/config",
            ha_status=settings.status_topic or f"{settings.discovery_prefix}/status",
            ask=f"{base}/ask",
            question=f"{base}/question",
            answer=f"{base}/answer",
            answer_attributes=f"{base}/answer/attributes",
            replies=f"{base}/replies",
            alert_event=f"{base}/alert",
            snapshot=f"{base}/snapshot",
            watches=f"{base}/watches",
            watches_attributes=f"{base}/watches/attributes",
            cancel_watches=f"{base}/watches/cancel",
            llm=f"{base}/llm",
            llm_attributes=f"{base}/llm/attributes",
            frigate=f"{base}/frigate",
            chat_request=f"{topics.prefix}/{user}/chat",
            watch_request=f"{topics.prefix}/{user}/watch",
            health_request=f"{topics.prefix}/{user}/health",
        )


def node_id(settings: HomeAssistantSettings, topics: TopicMap) -> str:
    """The device's object id: configured, or lookout's topic prefix made id-safe."""
    return settings.node_id or _UNSAFE_ID.sub("_", topics.prefix)[:64]


def device_config(
    settings: HomeAssistantSettings, topics: TopicMap, ha: HaTopics, version: str
) -> dict[str, Any]:
    """The device-based discovery document for lookout.

    Every entity is unavailable while lookout is offline, except the broker connection
    sensor: its state *is* lookout's status, so it reads ``off`` instead.
    """
    node = node_id(settings, topics)
    available = [{"topic": topics.status, "payload_available": "online",
                  "payload_not_available": "offline"}]  # fmt: skip

    def entity(key: str, platform: str, name: str, **options: Any) -> tuple[str, dict[str, Any]]:
        # Entity ids allow only [a-z0-9_]; a node id may also hold '-'.
        object_id = _ENTITY_UNSAFE.sub("_", f"{node}_{key}".lower())
        config: dict[str, Any] = {
            "p": platform,
            "name": name,
            "unique_id": f"{node}_{key}",
            # Both keys on purpose (see ENTITY_ID_KEYS): each release reads the one it knows.
            "object_id": object_id,
            "default_entity_id": f"{platform}.{object_id}",
            "availability": available,
        }
        config.update(options)
        return key, config

    components = dict(
        [
            entity("question", "text", "Question", command_topic=ha.ask, state_topic=ha.question,
                   min=1, max=STATE_MAX, mode="text", qos=1, icon="mdi:chat-question"),
            entity("ask", "notify", "Ask", command_topic=ha.ask, qos=1, icon="mdi:chat"),
            entity("answer", "sensor", "Answer", state_topic=ha.answer,
                   json_attributes_topic=ha.answer_attributes, icon="mdi:robot"),
            entity("watch_alert", "event", "Watch alert", state_topic=ha.alert_event,
                   event_types=list(ALERT_EVENT_TYPES), icon="mdi:cctv"),
            entity("alert_snapshot", "image", "Alert snapshot", image_topic=ha.snapshot,
                   content_type="image/jpeg"),
            entity("active_watches", "sensor", "Active watches", state_topic=ha.watches,
                   json_attributes_topic=ha.watches_attributes, state_class="measurement",
                   icon="mdi:eye"),
            entity("cancel_all_watches", "button", "Cancel all watches",
                   command_topic=ha.cancel_watches, payload_press="PRESS", qos=1,
                   icon="mdi:eye-off"),
            entity("broker_connection", "binary_sensor", "Broker connection",
                   state_topic=topics.status, payload_on="online", payload_off="offline",
                   device_class="connectivity", entity_category="diagnostic"),
            entity("frigate", "binary_sensor", "Frigate", state_topic=ha.frigate,
                   payload_on="ON", payload_off="OFF", device_class="connectivity",
                   entity_category="diagnostic"),
            entity("llm", "binary_sensor", "LLM", state_topic=ha.llm,
                   json_attributes_topic=ha.llm_attributes, payload_on="ON", payload_off="OFF",
                   device_class="connectivity", entity_category="diagnostic"),
        ]
    )  # fmt: skip
    # The broker sensor reports lookout's own status: it must not go unavailable with it.
    del components["broker_connection"]["availability"]
    return {
        "dev": {
            "identifiers": [node],
            # Home Assistant fills this in when it validates the device, but 2025.4.4 once
            # built an entity from a device block without it and logged a KeyError on
            # 'connections' (1 of 8 test runs); stated, it is there on every path.
            "connections": [],
            "name": settings.device_name,
            "manufacturer": "lookout",
            "model": "MQTT chat and camera watch for Frigate",
            "sw_version": version,
        },
        "o": {"name": "lookout", "sw_version": version},
        "cmps": components,
    }


def encode(document: dict[str, Any]) -> bytes:
    """Compact JSON bytes, UTF-8 (names and answers need not be ASCII)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def clip_state(text: str) -> str:
    """A state Home Assistant accepts: one line, at most 255 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= STATE_MAX else flat[: STATE_MAX - 1] + "…"

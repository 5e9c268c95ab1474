"""The in-memory mirror of Frigate, fed by its MQTT topics, and the feed into the history.

:class:`FrigateMirror` is what the router calls for every Frigate message
(``handle(topic, payload, retain)``, synchronous and cheap) and what the chat tools
and the watch engine read: cameras, zones, feature states, the active profile,
Frigate's availability, the objects tracked right now, and a stream of detections.
Every ``frigate/events``, ``frigate/tracked_object_update`` and ``frigate/reviews``
message is also handed to the :class:`~service.store.events.EventStore` as a patch.

Bad input never raises out of ``handle``: it is counted in :meth:`FrigateMirror.stats`
under ``rejected_<reason>`` and logged at most once a minute per reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
import structlog
from pydantic import ValidationError

from service.frigate.api import import_frigate_config
from service.frigate.cameras import CameraRegistry
from service.frigate.live import LiveTracker
from service.frigate.model import CameraInfo, Detection, DetectionStream, LiveObject, MotionState
from service.frigate.payloads import (
    MAX_PAYLOAD_BYTES,
    UPDATE_MODELS,
    EventMessage,
    ReviewMessage,
    UpdateHead,
    start_time_from_id,
)
from service.frigate.updates import event_patch, review_patch, update_patch
from service.frigate.waits import StatePredicate, StateWaiters
from service.mqtt import Pattern, TopicMap
from service.settings import FrigateSettings
from service.store import EventStore

log = structlog.get_logger(__name__)

LOG_EVERY_S = 60.0
MAX_STATE_CHARS = 64
_PROFILE_KEY = ("", "profile")
"""Waiter key for ``frigate/profile/state`` (no camera is named ``""``)."""


class FrigateMirror:
    """Cameras, zones, states and live objects as Frigate publishes them on MQTT.

    Args:
        settings: ``frigate`` section (prefix, friendly names, ``object_ttl_s``).
        topics: The topic map (Frigate's prefix included).
        store: Where event and review history goes; ``None`` keeps only the mirror.
        clock: Wall clock (injected in tests) for ``last_seen`` and object expiry.
    """

    def __init__(
        self,
        settings: FrigateSettings,
        topics: TopicMap,
        store: EventStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._store = store
        self._clock = clock
        self.registry = CameraRegistry()
        self.registry.apply_names(settings.cameras, "settings")
        # Frigate publishes `<cam>/zone/<zone>/state` (ON/OFF) for every zone on connect;
        # TopicMap has no pattern for it yet (see the report), so it is declared here.
        self.zone_state = Pattern(f"{topics.frigate_prefix}/{{camera}}/zone/{{zone}}/state")
        self._live = LiveTracker(settings.object_ttl_s, clock)
        self._available: str | None = None
        self._profile: str | None = None
        self._profile_state: str | None = None
        self._subscribers: list[Callable[[Detection], None]] = []
        self._motion: dict[str, MotionState] = {}
        self._motion_subscribers: list[Callable[[MotionState], None]] = []
        self._waiters = StateWaiters()
        self._stats: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}

    async def import_api_config(self, transport: httpx2.AsyncBaseTransport | None = None) -> bool:
        """Add cameras, zones and friendly names from Frigate's ``/api/config``.

        Does nothing when ``frigate.url`` is unset. lookout's own config keeps priority.

        Args:
            transport: For tests (``httpx2.MockTransport``).

        Returns:
            Whether the config was imported (a failure is logged, never raised).
        """
        if not self._settings.url:
            return False
        cameras = await import_frigate_config(
            self._settings.url, self._settings.api_timeout_s, transport=transport
        )
        if cameras is None:
            return False
        self.registry.apply_names(cameras, "api")
        return True

    # -- subscriptions -----------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        """The MQTT filters (with QoS) the bus should subscribe to for this mirror."""
        t = self._topics
        filters = [
            t.frigate_events,
            t.frigate_reviews,
            t.frigate_tracked_object_update,
            t.frigate_available,
            t.frigate_profile_state,
            t.frigate_state.filter,
            self.zone_state.filter,
            t.frigate_motion.filter,
        ]
        return [(f, 1) for f in filters]

    @property
    def snapshot_pattern(self) -> Pattern:
        """``frigate/{camera}/{label}/snapshot``: the router sends these to the frame store."""
        return self._topics.frigate_snapshot

    # -- message entry point -----------------------------------------------------

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """Take one Frigate message; never raises, O(1) apart from parsing the payload.

        ``retain`` is accepted for the router's signature: retained and live messages
        mean the same here (a retained state is simply the current one).
        """
        self._count("messages")
        try:
            self._dispatch(topic, payload)
        except Exception:  # noqa: BLE001 - message boundary: count, log, keep going
            self._reject("handler_error", topic, exc_info=True)
        self._live.maybe_sweep(self._clock())

    def _dispatch(self, topic: str, payload: bytes) -> None:
        t = self._topics
        if len(payload) > MAX_PAYLOAD_BYTES:
            self._reject("too_large", topic)
        elif topic == t.frigate_events:
            self._on_event(topic, payload)
        elif topic == t.frigate_tracked_object_update:
            self._on_update(topic, payload)
        elif topic == t.frigate_reviews:
            self._on_review(topic, payload)
        elif topic == t.frigate_available:
            self._on_available(topic, payload)
        elif topic == t.frigate_profile_state:
            self._on_profile(topic, payload)
        elif (zone := self.zone_state.match(topic)) is not None:
            if self.registry.learn(zone["camera"], self._clock()):
                self.registry.learn_zones(zone["camera"], [zone["zone"]])
                self._count("zone_states")
        elif (state := t.frigate_state.match(topic)) is not None:
            self._on_state(topic, state["camera"], state["feature"], payload)
        elif (motion := t.frigate_motion.match(topic)) is not None:
            self._on_motion(topic, motion["camera"], payload)
        else:
            self._count("ignored")

    # -- handlers ----------------------------------------------------------------

    def _on_event(self, topic: str, payload: bytes) -> None:
        try:
            message = EventMessage.model_validate_json(payload)
        except ValidationError:
            self._reject("invalid_event", topic)
            return
        obj = message.after
        now = self._clock()
        if obj.false_positive:
            self._count("ignored_false_positive")
            return
        if not self.registry.learn(obj.camera, now):
            self._reject("bad_camera", topic)
            return
        self.registry.learn_zones(obj.camera, (*obj.entered_zones, *obj.current_zones))
        self._count("events")
        detection = self._live.track(message, now)
        if self._store is not None:
            self._store.submit(event_patch(obj, now))
        self._emit(detection)

    def _on_update(self, topic: str, payload: bytes) -> None:
        try:
            head = UpdateHead.model_validate_json(payload)
        except ValidationError:
            self._reject("invalid_update", topic)
            return
        model = UPDATE_MODELS.get(head.type)
        if model is None:
            self._count("ignored_update_type")
            return
        try:
            # Parsed twice on purpose: updates are rare, and pydantic's JSON parser
            # (unlike json.loads) refuses lone surrogates that a database would choke on.
            update = model.model_validate_json(payload)
        except ValidationError:
            self._reject("invalid_update", topic)
            return
        now = self._clock()
        if update.camera is not None:
            self.registry.learn(update.camera, now)
        self._count(f"updates_{head.type}")
        self._live.annotate(update)
        start = start_time_from_id(update.id) or update.timestamp or now
        patch = update_patch(update, start, now)
        if self._store is not None and patch is not None:
            self._store.submit(patch)

    def _on_review(self, topic: str, payload: bytes) -> None:
        try:
            message = ReviewMessage.model_validate_json(payload)
        except ValidationError:
            self._reject("invalid_review", topic)
            return
        review = message.after
        now = self._clock()
        if not self.registry.learn(review.camera, now):
            self._reject("bad_camera", topic)
            return
        self.registry.learn_zones(review.camera, review.data.zones)
        self._count("reviews")
        if self._store is not None:
            self._store.submit_review(review_patch(review, now))

    def _on_available(self, topic: str, payload: bytes) -> None:
        value = self._text(topic, payload)
        if value is None:
            return
        if value != self._available:
            # Frigate restarted or went away: whatever it tracked before is gone, and it
            # sends no `end` for it.
            self._live.clear()
            log.info("frigate_availability_changed", available=value, previous=self._available)
        self._available = value
        self._count("available")

    def _on_profile(self, topic: str, payload: bytes) -> None:
        value = self._text(topic, payload, allow_empty=True)
        if value is None:
            return
        self._profile_state = value
        self._profile = None if value.lower() in ("", "none") else value
        self._count("profile")
        self._waiters.notify(_PROFILE_KEY, value)

    def _on_state(self, topic: str, camera: str, feature: str, payload: bytes) -> None:
        value = self._text(topic, payload)
        if value is None:
            return
        if not self.registry.set_state(camera, feature, value, self._clock()):
            self._count("ignored")
            return
        self._count("states")
        self._waiters.notify((camera, feature), value)

    def _on_motion(self, topic: str, camera: str, payload: bytes) -> None:
        value = self._text(topic, payload)
        if value not in ("ON", "OFF"):
            if value is not None:
                self._reject("bad_motion", topic)
            return
        now = self._clock()
        if not self.registry.learn(camera, now):
            self._reject("bad_camera", topic)
            return
        active = value == "ON"
        previous = self._motion.get(camera)
        if previous is not None and previous.active == active:
            return  # a repeat (Frigate re-sends OFF on every reconnect): no change
        state = MotionState(camera, active, now)
        self._motion[camera] = state
        self._count("motion")
        for callback in list(self._motion_subscribers):
            try:
                callback(state)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the mirror
                self._reject("subscriber_error", topic, exc_info=True)

    def _text(self, topic: str, payload: bytes, *, allow_empty: bool = False) -> str | None:
        try:
            value = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._reject("bad_text", topic)
            return None
        if (
            len(value) > MAX_STATE_CHARS
            or not value.isprintable()
            or (not value and not allow_empty)
        ):
            self._reject("bad_text", topic)
            return None
        return value

    # -- reading -----------------------------------------------------------------

    def cameras(self) -> list[CameraInfo]:
        """Every known camera (config, API, or heard on MQTT), sorted by id."""
        return self.registry.cameras()

    def camera(self, camera_id: str) -> CameraInfo | None:
        """One camera by id, or ``None``."""
        return self.registry.camera(camera_id)

    def resolve_camera(self, name: str) -> str | None:
        """A camera id from an id or friendly name (case, ``_``/``-``/spaces ignored)."""
        return self.registry.resolve_camera(name)

    def resolve_zone(self, name: str, cameras: list[str] | None = None) -> list[str]:
        """Zone ids matching an id or friendly name on ``cameras`` (all when ``None``)."""
        return self.registry.resolve_zone(name, cameras)

    def state(self, camera: str, feature: str) -> str | None:
        """The last ``frigate/<camera>/<feature>/state`` value, e.g. ``ON``."""
        return self.registry.state(camera, feature)

    def profile(self) -> str | None:
        """The active Frigate profile, or ``None`` (none active or never heard)."""
        return self._profile

    def available(self) -> str | None:
        """Frigate's ``available`` topic: ``online``, ``offline``, ``stopped`` or ``None``."""
        return self._available

    def live_objects(self, camera: str) -> list[LiveObject]:
        """Objects tracked on ``camera`` right now, oldest first; expired ones are dropped."""
        return self._live.objects(camera)

    def motion(self, camera: str) -> MotionState | None:
        """Frigate's motion state of ``camera`` (``None``: never heard, e.g. no Frigate)."""
        return self._motion.get(camera)

    def subscribe_motion(self, callback: Callable[[MotionState], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously, must be quick) when a camera's motion changes.

        Returns:
            A function that unsubscribes.
        """
        self._motion_subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._motion_subscribers:
                self._motion_subscribers.remove(callback)

        return unsubscribe

    def stats(self) -> dict[str, int]:
        """Counters: messages, events, reviews, states, ``rejected_<reason>``, ..."""
        live = self._live.count()
        return {**self._stats, "live_objects": live, "camera_overflow": self.registry.overflow}

    # -- detections and state waits --------------------------------------------------

    def subscribe_detections(self, callback: Callable[[Detection], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously, must be quick) for every detection.

        Returns:
            A function that unsubscribes.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def detections(self, camera: str | None = None, maxsize: int = 256) -> DetectionStream:
        """A bounded async stream of detections; use as ``with mirror.detections(cam) as s``."""
        return DetectionStream(self.subscribe_detections, camera=camera, maxsize=maxsize)

    async def wait_state(
        self, camera: str, feature: str, expected: str | StatePredicate, timeout: float
    ) -> str | None:
        """Wait until a camera feature's state matches, e.g. after publishing a ``/set``.

        Args:
            camera: Camera id.
            feature: Feature name (``detect``, ``recordings``...).
            expected: The exact value, or a predicate on the value.
            timeout: Seconds to wait.

        Returns:
            The matching value (at once if the current one matches), or ``None`` on timeout.
        """
        return await self._waiters.wait(
            (camera, feature), self.state(camera, feature), expected, timeout
        )

    async def wait_profile(self, expected: str | StatePredicate, timeout: float) -> str | None:
        """Wait until ``frigate/profile/state`` matches (after publishing ``profile/set``).

        Args:
            expected: The exact state text (``none`` when no profile is active), or a
                predicate on it.
            timeout: Seconds to wait.

        Returns:
            The matching state text, or ``None`` on timeout.
        """
        return await self._waiters.wait(_PROFILE_KEY, self._profile_state, expected, timeout)

    # -- internals ---------------------------------------------------------------

    def _emit(self, detection: Detection) -> None:
        for callback in list(self._subscribers):
            try:
                callback(detection)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the mirror
                self._reject("subscriber_error", self._topics.frigate_events, exc_info=True)

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1

    def _reject(self, reason: str, topic: str, *, exc_info: bool = False) -> None:
        key = f"rejected_{reason}"
        self._count(key)
        now = self._clock()
        if now - self._last_logged.get(key, float("-inf")) >= LOG_EVERY_S:
            self._last_logged[key] = now
            log.warning(
                "frigate_message_rejected",
                reason=reason,
                topic=topic[:200],
                count=self._stats[key],
                exc_info=exc_info,
            )

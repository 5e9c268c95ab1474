"""The mirror's ingestion side: every Frigate message, parsed at the edge and applied.

:class:`MirrorIngest` is the half of :class:`~service.frigate.mirror.FrigateMirror` the
router calls for every message on Frigate's topics (``handle(topic, payload, retain)``,
synchronous and cheap). Events, object updates and reviews also go to the history as
patches. Bad input never raises out of ``handle``: it is counted under
``rejected_<reason>`` and logged at most once a minute per reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from pydantic import ValidationError

from service.frigate.activity import parse_activity
from service.frigate.cameras import CameraRegistry
from service.frigate.listeners import Counters, Listeners
from service.frigate.live import LiveTracker
from service.frigate.model import Availability, Detection, MotionState
from service.frigate.payloads import (
    MAX_PAYLOAD_BYTES,
    UPDATE_MODELS,
    EventMessage,
    ReviewMessage,
    UpdateHead,
    start_time_from_id,
)
from service.frigate.updates import event_patch, review_patch, update_patch
from service.frigate.waits import StateWaiters
from service.mqtt import Pattern, TopicMap
from service.store import EventStore

log = structlog.get_logger(__name__)

MAX_STATE_CHARS = 64
PROFILE_KEY = ("", "profile")
"""Waiter key for ``frigate/profile/state`` (no camera is named ``""``)."""


class MirrorIngest:
    """Parses Frigate's messages and updates the mirror's state (see the module docstring).

    The attributes are the mirror's state; :class:`~service.frigate.mirror.FrigateMirror`
    builds them and adds the reading side.
    """

    _topics: TopicMap
    _store: EventStore | None
    _clock: Callable[[], float]
    registry: CameraRegistry
    zone_state: Pattern
    _live: LiveTracker
    _available: str | None
    _profile: str | None
    _profile_state: str | None
    _counters: Counters
    _detections: Listeners[Detection]
    _motions: Listeners[MotionState]
    _motion: dict[str, MotionState]
    _waiters: StateWaiters
    availability: asyncio.Queue[Availability]

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """Take one Frigate message; never raises, O(1) apart from parsing the payload.

        ``retain`` marks a copy the broker kept (delivered because lookout subscribed):
        for the mirror it is the current state all the same, but it confirms no command
        (see :meth:`wait_state`).
        """
        self._count("messages")
        try:
            self._dispatch(topic, payload, retain)
        except Exception:  # noqa: BLE001 - message boundary: count, log, keep going
            self._reject("handler_error", topic, exc_info=True)
        self._live.maybe_sweep(self._clock())

    def _dispatch(self, topic: str, payload: bytes, retain: bool) -> None:
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
            self._on_profile(topic, payload, retain)
        elif (zone := self.zone_state.match(topic)) is not None:
            if self.registry.learn(zone["camera"], self._clock()):
                self.registry.learn_zones(zone["camera"], [zone["zone"]])
                self._count("zone_states")
        elif topic == t.frigate_camera_activity:
            self._on_activity(topic, payload)
        elif (state := t.frigate_state.match(topic)) is not None:
            self._on_state(topic, state["camera"], state["feature"], payload, retain)
        elif (motion := t.frigate_motion.match(topic)) is not None:
            self._on_motion(topic, motion["camera"], payload)
        else:
            self._count("ignored")

    # -- handlers ----------------------------------------------------------------

    def _on_event(self, topic: str, payload: bytes) -> None:
        context: dict[str, list[str]] = {"refused_zones": []}
        try:
            message = EventMessage.model_validate_json(payload, context=context)
        except ValidationError:
            self._reject("invalid_event", topic)
            return
        self._refused_zones(topic, context["refused_zones"])
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
        if (changed := self._live.annotate(update)) is not None:
            # A name or a description arrived: news for a watch on this camera.
            self._emit(Detection.of_live(changed))
        start = start_time_from_id(update.id) or update.timestamp or now
        patch = update_patch(update, start, now)
        if self._store is not None and patch is not None:
            self._store.submit(patch)

    def _on_review(self, topic: str, payload: bytes) -> None:
        context: dict[str, list[str]] = {"refused_zones": []}
        try:
            message = ReviewMessage.model_validate_json(payload, context=context)
        except ValidationError:
            self._reject("invalid_review", topic)
            return
        self._refused_zones(topic, context["refused_zones"])
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
        previous = self._available
        if value != previous:
            # Frigate restarted or went away: whatever it tracked before is gone, and it
            # sends no `end` for it.
            self._live.clear()
            log.info("frigate_availability_changed", available=value, previous=previous)
            self._note(Availability(previous, value, self._clock()))
        self._available = value
        self._count("available")

    def _on_profile(self, topic: str, payload: bytes, retain: bool) -> None:
        value = self._text(topic, payload, allow_empty=True)
        if value is None:
            return
        self._profile_state = value
        self._profile = None if value.lower() in ("", "none") else value
        self._count("profile")
        fresh = not retain and self._available == "online"
        self._waiters.notify(PROFILE_KEY, value, fresh=fresh)

    def _on_state(
        self, topic: str, camera: str, feature: str, payload: bytes, retain: bool
    ) -> None:
        value = self._text(topic, payload)
        if value is None:
            return
        if not self.registry.set_state(camera, feature, value, self._clock()):
            self._count("ignored")
            return
        self._count("states")
        fresh = not retain and self._available == "online"
        self._waiters.notify((camera, feature), value, fresh=fresh)

    def _on_activity(self, topic: str, payload: bytes) -> None:
        try:
            activity = parse_activity(payload)
        except ValueError:
            self._reject("invalid_activity", topic)
            return
        now = self._clock()
        for camera, states in activity.items():
            for feature, value in states.items():
                self.registry.set_state(camera, feature, value, now)
        self._count("activity")

    def _note(self, change: Availability) -> None:
        # Bounded: without a consumer (tests, a stopped upkeep) keep the newest changes.
        if self.availability.full():
            self.availability.get_nowait()
        self.availability.put_nowait(change)

    def _refused_zones(self, topic: str, refused: list[str]) -> None:
        if not refused:
            return
        self._counters.count("rejected_zone_names", len(refused))
        if self._counters.due("zone_names"):
            log.warning("frigate_zone_names_refused", topic=topic, names=refused[:5])

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
        self._motions.emit(state)

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

    def _emit(self, detection: Detection) -> None:
        self._detections.emit(detection)

    def _count(self, key: str) -> None:
        self._counters.count(key)

    def _reject(self, reason: str, topic: str, *, exc_info: bool = False) -> None:
        self._counters.reject(reason, topic, exc_info=exc_info)

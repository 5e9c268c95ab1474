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

import asyncio
import time
from collections.abc import Callable

import httpx2
import structlog

from service.frigate.api import import_frigate_config
from service.frigate.cameras import CameraRegistry
from service.frigate.history import HistoryImporter
from service.frigate.ingest import PROFILE_KEY, MirrorIngest
from service.frigate.listeners import Counters, Listeners
from service.frigate.live import LiveTracker
from service.frigate.model import (
    Availability,
    CameraInfo,
    Detection,
    DetectionStream,
    LiveObject,
    MotionState,
)
from service.frigate.waits import StatePredicate, StateWaiters
from service.mqtt import Pattern, TopicMap
from service.settings import FrigateSettings
from service.store import EventStore

log = structlog.get_logger(__name__)

MAX_STATE_CHARS = 64


class FrigateMirror(MirrorIngest):
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
        self.settings = settings
        self.topics = topics
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
        self._counters = Counters(clock)
        events_topic = topics.frigate_events
        self._detections: Listeners[Detection] = Listeners(
            lambda: self._counters.reject("subscriber_error", events_topic, exc_info=True)
        )
        self._motion: dict[str, MotionState] = {}
        self.availability: asyncio.Queue[Availability] = asyncio.Queue(maxsize=64)
        """Changes of Frigate's availability, for the upkeep task (see ``upkeep.py``)."""
        self._motions: Listeners[MotionState] = Listeners(
            lambda: self._counters.reject("subscriber_error", events_topic, exc_info=True)
        )
        self._waiters = StateWaiters()
        self.importer: HistoryImporter | None = None
        """Imports Frigate's history from its API (with ``frigate.url`` and a store)."""
        if settings.url and settings.import_history and store is not None:
            self.importer = HistoryImporter(settings.url, settings.api_timeout_s, store, clock)

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
            t.frigate_camera_activity,
        ]
        return [(f, 1) for f in filters]

    @property
    def snapshot_pattern(self) -> Pattern:
        """``frigate/{camera}/{label}/snapshot``: the router sends these to the frame store."""
        return self._topics.frigate_snapshot

    # -- message entry point -----------------------------------------------------

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
        return self._motions.add(callback)

    def stats(self) -> dict[str, int]:
        """Counters: messages, events, reviews, states, ``rejected_<reason>``, ..."""
        live = self._live.count()
        return {
            **self._counters.values,
            "live_objects": live,
            "camera_overflow": self.registry.overflow,
        }

    # -- detections and state waits --------------------------------------------------

    def subscribe_detections(self, callback: Callable[[Detection], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously, must be quick) for every detection.

        Returns:
            A function that unsubscribes.
        """
        return self._detections.add(callback)

    def detections(self, camera: str | None = None, maxsize: int = 256) -> DetectionStream:
        """A bounded async stream of detections; use as ``with mirror.detections(cam) as s``."""
        return DetectionStream(self.subscribe_detections, camera=camera, maxsize=maxsize)

    async def wait_state(
        self,
        camera: str,
        feature: str,
        expected: str | StatePredicate,
        timeout: float,
        *,
        fresh_only: bool = False,
    ) -> str | None:
        """Wait until a camera feature's state matches, e.g. after publishing a ``/set``.

        Args:
            camera: Camera id.
            feature: Feature name (``detect``, ``recordings``...).
            expected: The exact value, or a predicate on the value.
            timeout: Seconds to wait.
            fresh_only: Only a state message that arrives from now on, live (not a
                retained copy) and while Frigate is online counts: Frigate's own word
                that it handled a command, not what lookout already knew.

        Returns:
            The matching value (at once if the current one matches and ``fresh_only``
            is off), or ``None`` on timeout.
        """
        return await self._waiters.wait(
            (camera, feature),
            self.state(camera, feature),
            expected,
            timeout,
            fresh_only=fresh_only,
        )

    async def wait_profile(
        self, expected: str | StatePredicate, timeout: float, *, fresh_only: bool = False
    ) -> str | None:
        """Wait until ``frigate/profile/state`` matches (after publishing ``profile/set``).

        Args:
            expected: The exact state text (``none`` when no profile is active), or a
                predicate on it.
            timeout: Seconds to wait.
            fresh_only: Only a live state message from now on counts (see ``wait_state``).

        Returns:
            The matching state text, or ``None`` on timeout.
        """
        return await self._waiters.wait(
            PROFILE_KEY, self._profile_state, expected, timeout, fresh_only=fresh_only
        )

    # -- internals ---------------------------------------------------------------

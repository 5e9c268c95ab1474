"""What the Frigate mirror hands out: cameras, zones, live objects and detections.

All of these are frozen snapshots; the mirror builds new ones on every change, so a
caller may keep one without it changing under its feet.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

DetectionKind = Literal["new", "update", "end"]


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    """A zone of a camera; ``friendly_name`` falls back to the id in title case."""

    id: str
    friendly_name: str


@dataclass(frozen=True, slots=True)
class CameraInfo:
    """A camera as lookout knows it right now.

    Attributes:
        id: Frigate's camera name (a topic level).
        friendly_name: From config or Frigate's ``/api/config``, else the id in title case.
        zones: Zones learned from config, events and zone state topics, sorted by id.
        states: Last retained ``frigate/<camera>/<feature>/state`` value per feature.
        last_seen: Wall time of the last message about this camera (``None``: config only).
    """

    id: str
    friendly_name: str
    zones: list[ZoneInfo]
    states: dict[str, str]
    last_seen: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "friendly_name": self.friendly_name,
            "zones": [{"id": z.id, "friendly_name": z.friendly_name} for z in self.zones],
            "states": dict(self.states),
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class LiveObject:
    """An object Frigate is tracking right now (from the latest ``frigate/events`` ``after``).

    ``sub_label`` is the name Frigate gave it (its ``[name, score]`` split), filled
    from a plate-owner or classifier update when Frigate's own is empty. ``face`` and
    ``face_score`` are face recognition's current guess, which is not a name until
    Frigate makes it the sub label. ``received_at`` is lookout's wall time of the last
    message about it (used for expiry).
    """

    id: str
    camera: str
    label: str
    sub_label: str | None
    sub_label_score: float | None
    current_zones: tuple[str, ...]
    entered_zones: tuple[str, ...]
    stationary: bool
    score: float | None
    top_score: float | None
    frame_time: float | None
    start_time: float
    plate: str | None = None
    face: str | None = None
    face_score: float | None = None
    described: bool = False
    """Frigate's GenAI has described it (``tracked_object_update`` ``description``)."""
    received_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (zones as lists, ``received_at`` left out)."""
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "sub_label": self.sub_label,
            "sub_label_score": self.sub_label_score,
            "current_zones": list(self.current_zones),
            "entered_zones": list(self.entered_zones),
            "stationary": self.stationary,
            "score": self.score,
            "top_score": self.top_score,
            "frame_time": self.frame_time,
            "start_time": self.start_time,
            "plate": self.plate,
            "face": self.face,
            "face_score": self.face_score,
            "described": self.described,
        }


@dataclass(frozen=True, slots=True)
class Availability:
    """A change of Frigate's ``available`` topic, as the mirror saw it.

    Attributes:
        previous: The value before (``None``: the first value lookout heard).
        current: ``online``, ``offline`` (Frigate's last will) or ``stopped``.
        at: lookout's wall time of the message.
    """

    previous: str | None
    current: str
    at: float


@dataclass(frozen=True, slots=True)
class MotionState:
    """Frigate's ``frigate/<camera>/motion``: whether its motion detector sees motion.

    Attributes:
        camera: Camera id.
        active: ``ON`` (motion now) or ``OFF`` (none for Frigate's ``mqtt_off_delay``,
            30 s by default; Frigate also sends ``OFF`` on every reconnect).
        since: lookout's wall time of the message that set ``active``.
    """

    camera: str
    active: bool
    since: float


@dataclass(frozen=True, slots=True)
class Detection:
    """One ``frigate/events`` message, reduced to what a watch needs to decide on a wake-up.

    Attributes:
        camera: Camera id.
        object_id: Frigate's tracked-object id.
        label: Object label.
        sub_label: Sub label name, if any.
        zones: Zones the object is in now (``current_zones``).
        new_zones: Zones it is in now and was not in at the previous message.
        stationary: Frigate considers it stationary.
        kind: Frigate's message type.
        entered_new_zone: ``new_zones`` is not empty.
        became_active: It was stationary at the previous message and moves now.
        first_seen: lookout had not seen this object before (new, or lookout just started).
        frame_time: Frigate's frame time of this update.
        described: Frigate's GenAI has described the object.
    """

    camera: str
    object_id: str
    label: str
    sub_label: str | None
    zones: tuple[str, ...]
    new_zones: tuple[str, ...]
    stationary: bool
    kind: DetectionKind
    entered_new_zone: bool
    became_active: bool
    first_seen: bool
    frame_time: float | None
    described: bool = False

    @classmethod
    def of_live(cls, obj: LiveObject) -> Detection:
        """An ``update`` about a live object whose name or description just arrived."""
        return cls(
            camera=obj.camera,
            object_id=obj.id,
            label=obj.label,
            sub_label=obj.sub_label,
            zones=obj.current_zones,
            new_zones=(),
            stationary=obj.stationary,
            kind="update",
            entered_new_zone=False,
            became_active=False,
            first_seen=False,
            frame_time=obj.frame_time,
            described=obj.described,
        )

    @property
    def wakes(self) -> bool:
        """Whether this should wake a watch at once.

        A moving object appearing, an object entering a zone, or a parked one starting
        to move wakes; an update about an object that was already there and stays
        stationary (a parked car in the zone) does not, and neither does an end.
        """
        if self.kind == "end":
            return False
        return (
            (self.first_seen and not self.stationary) or self.entered_new_zone or self.became_active
        )


@dataclass(eq=False)
class DetectionStream:
    """A bounded async stream of detections, optionally for one camera.

    Use it as a context manager (it subscribes on enter and unsubscribes on exit) and
    ``await stream.get()`` with a timeout, or ``async for``. A consumer that falls behind
    loses the oldest detections (counted in ``dropped``), never blocks the mirror.
    """

    subscribe: Callable[[Callable[[Detection], None]], Callable[[], None]]
    camera: str | None = None
    maxsize: int = 256
    dropped: int = 0
    _queue: collections.deque[Detection] = field(default_factory=collections.deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _unsubscribe: Callable[[], None] | None = None

    def __enter__(self) -> Self:
        self._unsubscribe = self.subscribe(self._put)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _put(self, detection: Detection) -> None:
        if self.camera is not None and detection.camera != self.camera:
            return
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(detection)
        self._ready.set()

    async def get(self) -> Detection:
        """The next detection, waiting for one if none is queued."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def get_nowait(self) -> Detection | None:
        """The next queued detection, or ``None``."""
        return self._queue.popleft() if self._queue else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Detection:
        return await self.get()

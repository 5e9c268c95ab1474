"""The objects Frigate is tracking right now, rebuilt from ``frigate/events``.

``new``/``update`` replace an object by id with the message's ``after``; ``end`` removes
it. Frigate sends no ``end`` for objects it forgets when it restarts, so an object with
no message for ``ttl`` seconds is dropped (lazily on read and by a cheap sweep).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from service.frigate.model import Detection, LiveObject
from service.frigate.payloads import (
    DescriptionUpdate,
    EventMessage,
    FaceUpdate,
    FrigateObject,
    LprUpdate,
    UpdateHead,
)
from service.frigate.updates import update_name

MAX_LIVE_PER_CAMERA = 1_000
"""A bound against a flood of made-up ids; a real camera tracks a few dozen at most."""


class LiveTracker:
    """Live objects per camera, and what changed with each event.

    Args:
        ttl: Seconds without a message after which an object is dropped.
        clock: Wall clock (injected in tests).
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._live: dict[str, dict[str, LiveObject]] = {}
        self._last_sweep = clock()

    def track(self, message: EventMessage, now: float) -> Detection:
        """Apply one ``frigate/events`` message and describe the change for a watch."""
        obj = message.after
        objects = self._live.setdefault(obj.camera, {})
        previous = objects.get(obj.id)
        before: LiveObject | FrigateObject | None = previous or message.before_object()
        prior_zones = set(before.current_zones) if before is not None else set()
        new_zones = tuple(z for z in obj.current_zones if z not in prior_zones)
        ended = message.type == "end" or obj.end_time is not None
        current = _live_object(obj, previous, now)
        if ended:
            objects.pop(obj.id, None)
        elif previous is not None or len(objects) < MAX_LIVE_PER_CAMERA:
            objects[obj.id] = current
        return Detection(
            camera=obj.camera,
            object_id=obj.id,
            label=obj.label,
            sub_label=current.sub_label,
            zones=obj.current_zones,
            new_zones=new_zones,
            stationary=obj.stationary,
            kind=message.type,
            entered_new_zone=bool(new_zones) and not ended,
            became_active=before is not None and before.stationary and not obj.stationary,
            first_seen=previous is None,
            frame_time=obj.frame_time,
            described=current.described,
        )

    def annotate(self, update: UpdateHead) -> LiveObject | None:
        """Apply a face guess, a description, or the name or plate a reader or classifier found.

        Returns:
            The live object when a watch may care (a name filled in, a description that
            arrived), else ``None``.
        """
        name, score = update_name(update)
        plate = update.plate if isinstance(update, LprUpdate) else None
        face = update if isinstance(update, FaceUpdate) else None
        described = isinstance(update, DescriptionUpdate) and bool(update.description)
        for objects in self._live.values():
            live = objects.get(update.id)
            if live is None:
                continue
            news = False
            if name is not None and live.sub_label is None:
                live = dataclasses.replace(live, sub_label=name, sub_label_score=score)
                news = True
            if plate is not None:
                live = dataclasses.replace(live, plate=plate)
            if face is not None and face.name is not None:
                # An attempt without a guess (a tie, too few faces) keeps the last one.
                live = dataclasses.replace(live, face=face.name, face_score=face.score)
            if described and not live.described:
                live = dataclasses.replace(live, described=True)
                news = True
            objects[update.id] = live
            return live if news else None
        return None

    def objects(self, camera: str) -> list[LiveObject]:
        """Live objects on ``camera``, oldest first, after dropping expired ones."""
        objects = self._live.get(camera)
        if not objects:
            return []
        self._expire(objects, self._clock() - self._ttl)
        return sorted(objects.values(), key=lambda o: o.start_time)

    def maybe_sweep(self, now: float) -> None:
        """Drop expired objects on every camera, at most every ``min(ttl/4, 30 s)``."""
        if now - self._last_sweep < min(self._ttl / 4, 30.0):
            return
        self._last_sweep = now
        for objects in self._live.values():
            self._expire(objects, now - self._ttl)

    def clear(self) -> None:
        """Forget every object (Frigate restarted or went away)."""
        self._live.clear()

    def count(self) -> int:
        """How many objects are held (expired ones included until the next sweep)."""
        return sum(len(objects) for objects in self._live.values())

    @staticmethod
    def _expire(objects: dict[str, LiveObject], cutoff: float) -> None:
        for key in [k for k, v in objects.items() if v.received_at < cutoff]:
            del objects[key]


def _live_object(obj: FrigateObject, previous: LiveObject | None, now: float) -> LiveObject:
    # Frigate's sub label wins; `null` says nothing (a plate owner or classifier's name
    # from an update stays), `[null, null]` clears it.
    sub_label: str | None = previous.sub_label if previous else None
    sub_score: float | None = previous.sub_label_score if previous else None
    if obj.sub_label is not None:
        sub_label, sub_score = obj.sub_label.name, obj.sub_label.score
    return LiveObject(
        id=obj.id,
        camera=obj.camera,
        label=obj.label,
        sub_label=sub_label,
        sub_label_score=sub_score if sub_label else None,
        current_zones=obj.current_zones,
        entered_zones=obj.entered_zones,
        stationary=obj.stationary,
        score=obj.score,
        top_score=obj.top_score,
        frame_time=obj.frame_time,
        start_time=obj.start_time,
        plate=obj.plate or (previous.plate if previous else None),
        face=previous.face if previous else None,
        face_score=previous.face_score if previous else None,
        described=previous.described if previous else False,
        received_at=now,
    )

"""Choosing the frame a model looks at: the scene, as fresh as lookout can get it.

In this order:

1. a whole-scene frame from lookout's frame topic (a publisher or ``lookout grab``)
   that is fresh (at most ``fresh_s`` old, and not a retained message, whose age is
   unknown);
2. with ``frigate.url``: Frigate's ``latest.jpg``, fetched on demand with its own
   timeout and reused for ``cache_s``;
3. an older scene frame, with its age;
4. Frigate's snapshot (a 270 px crop around the last object, retained, so often of
   unknown age), only when there is nothing better, marked as a crop.

Whatever is chosen comes with its true age (``None``: unknown) and, for the model, a
caption that says what the picture is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.frames.jpeg import FrameError, fetch_latest
from service.frames.latest import Frame, FrameStore

FRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class Picked:
    """A frame chosen for a model, with what is known about it.

    Attributes:
        frame: The frame.
        age_s: Seconds since it was taken; ``None`` when unknown (a retained message).
        notes: Why this frame and not a better one, in words.
    """

    frame: Frame
    age_s: float | None
    notes: tuple[str, ...] = ()

    @property
    def is_crop(self) -> bool:
        """A Frigate snapshot: a crop around one object, not the whole scene."""
        return self.frame.is_crop

    def describe(self) -> dict[str, Any]:
        """What a tool result says about the frame."""
        out: dict[str, Any] = {
            "source": self.frame.source,
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "kind": "crop of one object" if self.is_crop else "whole scene",
        }
        if self.age_s is None:
            out["age"] = "unknown: a retained message, it may be old"
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def caption(self, camera: str) -> str:
        """The words a model reads next to the image."""
        if self.is_crop:
            what = f"A cropped snapshot of the last {self.frame.label or 'object'} Frigate saw on"
            what += f" camera {camera!r} (a crop around one object, not the whole scene)"
        else:
            what = f"The image from camera {camera!r}"
        if self.frame.offline:
            return f"{what}: Frigate says the camera is offline; this is its last preview frame."
        if self.age_s is None:
            return f"{what}, of unknown age (it may be old)."
        if self.age_s < 5:
            return f"{what}, just now."
        return f"{what}, taken {_ago(self.age_s)}."


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes ago"
    return f"{seconds / 3600:.1f} hours ago"


@dataclass
class FramePicker:
    """Picks a model's frame for a camera (see the module docstring).

    Args:
        store: The frame store (frames from MQTT; fetched frames are put in it too).
        frigate_url: Frigate's base URL, or ``None``.
        timeout: Seconds for one ``latest.jpg`` fetch.
        cache_s: A fetched frame is reused for this long.
        fresh_s: A frame-topic frame at most this old is used without fetching.
        clock: Wall clock (the store's, normally).
    """

    store: FrameStore
    frigate_url: str | None = None
    timeout: float = 5.0
    cache_s: float = 2.0
    fresh_s: float = FRESH_S
    clock: Callable[[], float] = time.time

    async def pick(self, camera: str) -> tuple[Picked | None, list[str]]:
        """The frame for ``camera`` and notes on what failed; ``(None, notes)`` without one."""
        now = self.clock()
        notes: list[str] = []
        scene = self.store.scene(camera)
        if scene is not None:
            age = scene.age(now)
            # A frame-topic frame while fresh; a fetched one only for the cache's time.
            limit = self.cache_s if scene.source == "http" else self.fresh_s
            if age <= limit:
                return Picked(scene, age), notes
        if self.frigate_url:
            fetched = await self._fetch(camera, notes)
            if fetched is not None:
                return fetched, notes
        if scene is not None:
            age = scene.age(now)
            known = None if age == float("inf") else age
            if known is not None and known > self.fresh_s:
                notes.append("old frame: the camera has not sent a newer one")
            return Picked(scene, known, tuple(notes)), notes
        snap = self.store.snapshot(camera)
        if snap is not None:
            age = snap.age(now)
            notes.append("no whole-scene frame: this is Frigate's snapshot of the last object")
            return Picked(snap, None if age == float("inf") else age, tuple(notes)), notes
        notes.append("no frame has been received from this camera")
        return None, notes

    async def _fetch(self, camera: str, notes: list[str]) -> Picked | None:
        assert self.frigate_url is not None  # noqa: S101 - checked by the caller
        try:
            latest = await fetch_latest(self.frigate_url, camera, self.timeout)
        except FrameError as exc:
            notes.append(f"Frigate's latest.jpg failed: {exc}")
            return None
        frame = self.store.put(camera, latest.jpeg, source="http", offline=latest.offline)
        if frame is None:
            notes.append("Frigate's latest.jpg was not a usable JPEG")
            return None
        if latest.offline:
            notes.append("Frigate says the camera is offline: this is its last preview frame")
            return Picked(frame, None, tuple(notes))
        return Picked(frame, 0.0, tuple(notes))

"""The scripted scenes of the watch benchmark: what is in view, what Frigate says, what the
camera shows and what the vision model answers, as functions of scene time (seconds from
the watch's start). Both sides of ``bench_watch`` get exactly these.

* **Objects** (``Obj``) are what Frigate tracks: a path of (time, zones, stationary) and
  waypoints for where they are drawn. ``frigate_events`` turns them into
  ``frigate/events`` payloads as Frigate publishes them (``new``; an ``update`` on every
  change and every 60 s while in view; ``end``).
* **Props** are what Frigate does not track but a camera shows (a parcel on the porch).
* **Frames** (``render``): a 160x120 grey picture of the scene, with the light of the
  night (ambient, a flickering lamp), swaying shadows and sensor noise, so the change
  gate's thumbnails see what a camera would.
* **Frigate's motion** (``motion_states``): ON while something moves in view (or the
  light flickers), OFF 30 s after it stops, as ``frigate/<camera>/motion`` behaves.
* **The model** (``answer``) follows lookout's prompt: met when the condition is in the
  frame (sure), 3 s while it is forming, 10 s while relevant objects move, 120 s
  otherwise; on a *ghost* frame (a shadow that looks like a person) it says met, unsure.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from tests.frigate_replay import tracked_object

HOUR = 3600.0
HEARTBEAT_S = 60.0
MOTION_OFF_DELAY_S = 30.0
T0 = 1_767_225_600.0
"""Scene times are seconds from the watch's start; Frigate and the clock see T0 + that."""
W, H = 160, 120

# Where zones are drawn: (x, y) of their middle.
PLACES = {
    "street": (80.0, 100.0),
    "sidewalk": (80.0, 82.0),
    "path": (80.0, 70.0),
    "porch": (80.0, 55.0),
    "driveway": (130.0, 85.0),
    "lawn": (30.0, 80.0),
    "patio": (40.0, 60.0),
    "": (80.0, 90.0),
}


@dataclass
class Obj:
    """A tracked object: ``path`` is ``[(time, zones, stationary), ...]`` from its start.

    ``way`` holds ``(time, x, y)`` waypoints (drawn position, linear in between); without
    them the object sits in the middle of its zone. ``size`` and ``shade`` draw it.
    """

    id: str
    label: str
    path: list[tuple[float, tuple[str, ...], bool]]
    leave: float = math.inf
    way: list[tuple[float, float, float]] = field(default_factory=list)
    size: tuple[int, int] = (24, 10)
    shade: float = 40.0

    @property
    def appear(self) -> float:
        return self.path[0][0]

    def at(self, t: float) -> tuple[tuple[str, ...], bool] | None:
        """Zones and stationary at ``t``, or ``None`` when not in view."""
        if t < self.appear or t >= self.leave:
            return None
        index = bisect.bisect_right([p[0] for p in self.path], t) - 1
        _, zones, stationary = self.path[index]
        return zones, stationary

    def xy(self, t: float) -> tuple[float, float]:
        if not self.way:
            zones, _ = self.at(t) or ((), False)
            return PLACES[zones[0] if zones else ""]
        times = [w[0] for w in self.way]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.way[0][1], self.way[0][2]
        if i == len(self.way):
            return self.way[-1][1], self.way[-1][2]
        (t0, x0, y0), (t1, x1, y1) = self.way[i - 1], self.way[i]
        f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return x0 + (x1 - x0) * f, y0 + (y1 - y0) * f


@dataclass
class Prop:
    """Something a camera shows and Frigate does not track (a parcel)."""

    appear: float
    leave: float
    x: float
    y: float
    size: tuple[int, int] = (7, 5)
    shade: float = 200.0


@dataclass
class Scene:
    name: str
    camera: str
    condition: str
    labels: tuple[str, ...]
    zones: tuple[str, ...]
    objects: list[Obj]
    met: Callable[[Scene, float], bool]
    forming: Callable[[Scene, float], bool] = lambda _s, _t: False
    props: list[Prop] = field(default_factory=list)
    duration: float = HOUR
    flicker: bool = False
    """A flickering lamp and swaying shadows: Frigate's motion is ON all night."""
    ghost: Callable[[float], bool] = lambda _t: False
    """Frames on which the model wrongly, and unsurely, says the condition is met."""
    event_at: float | None = None
    """When the condition starts to hold (``None``: never)."""
    unsure_until: float = -math.inf
    """Before this, the model's "met" on the real event is unsure (confidence 0.5)."""
    seed: int = 1

    def visible(self, t: float) -> list[tuple[Obj, tuple[str, ...], bool]]:
        out = []
        for obj in self.objects:
            state = obj.at(t)
            if state is not None:
                out.append((obj, *state))
        return out

    def relevant(self, label: str, zones: tuple[str, ...]) -> bool:
        return (not self.labels or label in self.labels) and (
            not self.zones or bool(set(zones) & set(self.zones))
        )


# -- the model ---------------------------------------------------------------------------


def answer(scene: Scene, t: float, lazy_parked_s: int | None = None) -> tuple[bool, int, float]:
    """The scripted vision model: (condition_met, next_run_in, confidence) at ``t``.

    ``lazy_parked_s`` makes it ask that often whenever any relevant object is in view,
    parked or not (a model that reads a parked car as "relevant objects visible").
    """
    if scene.met(scene, t):
        return True, 1, 0.5 if t < scene.unsure_until else 0.9
    if scene.ghost(t):
        return True, 1, 0.4
    if scene.forming(scene, t):
        return False, 3, 0.8
    seen = [(o, z, s) for o, z, s in scene.visible(t) if scene.relevant(o.label, z)]
    if any(not s for _, _, s in seen):
        return False, 10, 0.9
    if seen and lazy_parked_s is not None:
        return False, lazy_parked_s, 0.9
    return False, 120, 0.9


# -- Frigate ---------------------------------------------------------------------------


def frigate_events(scene: Scene) -> list[tuple[float, bytes]]:
    """``frigate/events`` payloads as Frigate would publish them, by publish time."""
    import json

    out: list[tuple[float, bytes]] = []
    for obj in scene.objects:
        last: dict[str, Any] | None = None
        end = min(obj.leave, scene.duration)
        beats = {
            obj.appear + k * HEARTBEAT_S
            for k in range(1, int((end - obj.appear) // HEARTBEAT_S) + 1)
        }
        times = sorted({p[0] for p in obj.path} | beats)
        if obj.leave < math.inf:
            times.append(obj.leave)
        for t in times:
            if t > scene.duration:
                break
            state = obj.at(min(t, obj.leave - 1e-6))
            if state is None:
                continue
            zones, stationary = state
            ended = t >= obj.leave
            after = tracked_object(
                obj.id, scene.camera, obj.label, T0 + obj.appear, T0 + t,
                current=list(zones), entered=list(zones), stationary=stationary,
                end=T0 + t if ended else None,
            )  # fmt: skip
            kind = "new" if last is None else "end" if ended else "update"
            before = last or after
            out.append((t, json.dumps({"type": kind, "before": before, "after": after}).encode()))
            last = after
    out.sort(key=lambda e: e[0])
    return out


@dataclass(frozen=True)
class Motion:
    active: bool
    since: float


def motion_states(scene: Scene) -> list[tuple[float, Motion]]:
    """Frigate's ``<camera>/motion`` changes, by scene time (ON at once, OFF 30 s late)."""
    start = int(min(0.0, *(o.appear for o in scene.objects)) if scene.objects else 0.0)
    changes: list[tuple[float, Motion]] = []
    active, last_motion = False, -math.inf
    for t in range(start, int(scene.duration) + 1):
        moving = scene.flicker or any(not s for _, _, s in scene.visible(t))
        moving = moving or any(p.appear <= t < p.appear + 2 for p in scene.props)
        if moving:
            last_motion = t
        now_active = moving or (active and t - last_motion < MOTION_OFF_DELAY_S)
        if now_active != active:
            active = now_active
            changes.append((float(t), Motion(active, T0 + t)))
    return changes


# -- the camera ------------------------------------------------------------------------


@cache
def _background(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((H, W), 110.0)
    base[92:112, :] = 70.0  # the street
    base[76:90, :] = 140.0  # the sidewalk
    base[62:76, 72:88] = 150.0  # the path
    base[40:62, 55:105] = 160.0  # the porch
    base[:40, :] = 120.0  # the house
    base[:40:6, :] -= 25.0  # its siding
    base[8:30, 20:40] = 60.0  # a window
    base[10:40, 72:88] = 90.0  # the door
    texture = rng.normal(0, 8, (H // 4, W // 4)).repeat(4, 0).repeat(4, 1)
    return base + texture


@cache
def _lamp() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.exp(-(((xx - 120) / 70.0) ** 2 + ((yy - 30) / 60.0) ** 2))


def light(scene: Scene, t: float) -> float:
    """The flickering lamp's strength at ``t`` (1 for a steady light)."""
    if not scene.flicker:
        return 1.0
    rng = np.random.default_rng((scene.seed, int(t * 4)))
    return float(0.35 if rng.random() < 0.3 else rng.uniform(0.8, 1.0))


def render(scene: Scene, t: float) -> np.ndarray:
    """The camera's grey frame at ``t``."""
    img = _background(scene.seed).copy()
    for obj, _zones, _stationary in scene.visible(t):
        x, y = obj.xy(t)
        w, h = obj.size
        x0, y0 = int(x - w / 2), int(y - h)
        img[max(0, y0) : max(0, y0 + h), max(0, x0) : max(0, x0 + w)] = obj.shade
    for prop in scene.props:
        if prop.appear <= t < prop.leave:
            w, h = prop.size
            x0, y0 = int(prop.x - w / 2), int(prop.y - h)
            img[y0 : y0 + h, x0 : x0 + w] = prop.shade
    rng = np.random.default_rng((scene.seed, int(t * 10), 7))
    if scene.flicker:
        img = img * (0.35 + 0.65 * light(scene, t) * _lamp() + 0.1)
        yy, xx = np.mgrid[0:H, 0:W]
        for k, (cx, cy, period) in enumerate(((40, 50, 7.0), (120, 70, 5.0), (90, 30, 9.0))):
            sway = 12 * math.sin(2 * math.pi * t / period + k)
            blob = np.exp(-(((xx - cx - sway) / 14.0) ** 2 + ((yy - cy) / 9.0) ** 2))
            img = img * (1 - 0.35 * blob)
        img = img + rng.normal(0, 6, img.shape)
    else:
        img = img + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)

"""Which detections are news to a watch: the wake rules, pure, with an injected clock.

Frigate publishes an object's ``new`` and then an ``update`` whenever something about it
changes, and about once a minute while it stays (a parked car gets one every ~60 s for
as long as it is parked). A watch must wake at once for what could change its answer
and for nothing else. It keeps, per object, the *situation* it last saw it in (label,
zones, moving or stationary, name) and the situation in which the model last judged it,
and wakes when an object that could matter (its label among the watch's labels, one of
its zones among the watch's zones) is

* **new** (``new``): nothing like it was judged; objects that arrive together are judged
  in one call, because the check waits for a frame taken after all of them;
* **new and already stationary** (``new_stationary``): Frigate reports a car found
  parked as stationary from its first message after a restart; it is as new as any;
* **stopped** (``stopped``), **moving again** (``moved``), **in a zone it was not in**
  (``entered_zone``), **newly named** (``named``: a face or plate recognised) or
  **described** (``described``: Frigate's GenAI description arrived).

It does not wake for an object that is in the situation the model judged it in (a
parked car's minute-by-minute updates, its box jittering out of and back into a zone),
nor for a *moving* object in a situation the model judged "not met" within the last
``watch.max_unchanged_s`` (the hundredth car driving past a watch for "a car stops in
front of the house" is the first one again; it becomes news when it stops or turns into
the driveway). A stationary newcomer always wakes: a second car parking next to the
first is a change, even in the same zone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

WakeReason = Literal[
    "new", "new_stationary", "stopped", "moved", "entered_zone", "named", "described"
]

MAX_OBJECTS: Final = 512
"""Objects remembered per watch (the oldest are forgotten first)."""
MAX_PASSERS_BY: Final = 256


class DetectionLike(Protocol):
    """What the wake rules read of a detection (``service.frigate.Detection`` fits)."""

    @property
    def camera(self) -> str: ...  # noqa: D102
    @property
    def object_id(self) -> str: ...  # noqa: D102
    @property
    def label(self) -> str: ...  # noqa: D102
    @property
    def sub_label(self) -> str | None: ...  # noqa: D102
    @property
    def zones(self) -> tuple[str, ...]: ...  # noqa: D102
    @property
    def stationary(self) -> bool: ...  # noqa: D102
    @property
    def kind(self) -> str: ...  # noqa: D102
    @property
    def frame_time(self) -> float | None: ...  # noqa: D102
    @property
    def described(self) -> bool: ...  # noqa: D102


class LiveLike(Protocol):
    """What the wake rules read of a tracked object (``service.frigate.LiveObject`` fits)."""

    @property
    def id(self) -> str: ...  # noqa: D102
    @property
    def label(self) -> str: ...  # noqa: D102
    @property
    def sub_label(self) -> str | None: ...  # noqa: D102
    @property
    def current_zones(self) -> tuple[str, ...]: ...  # noqa: D102
    @property
    def stationary(self) -> bool: ...  # noqa: D102
    @property
    def described(self) -> bool: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class Situation:
    """How an object is, as far as a watch's answer could depend on it."""

    label: str
    zones: frozenset[str]
    stationary: bool
    sub_label: str | None
    described: bool = False

    @classmethod
    def of_detection(cls, detection: DetectionLike) -> Situation:
        """The situation a detection reports."""
        return cls(
            detection.label,
            frozenset(detection.zones),
            detection.stationary,
            detection.sub_label,
            detection.described,
        )

    @classmethod
    def of_live(cls, obj: LiveLike) -> Situation:
        """The situation of a tracked object."""
        return cls(
            obj.label, frozenset(obj.current_zones), obj.stationary, obj.sub_label, obj.described
        )


def matters(labels: tuple[str, ...], zones: tuple[str, ...], situation: Situation) -> bool:
    """Whether an object in ``situation`` could matter to a watch on ``labels`` and ``zones``."""
    if labels and situation.label not in labels:
        return False
    return not zones or bool(situation.zones & set(zones))


class ObjectMemory:
    """One watch's memory of the objects on its camera (see the module docstring).

    Args:
        labels: The watch's labels (empty: any).
        zones: The watch's zones (empty: anywhere).
    """

    def __init__(self, labels: tuple[str, ...] = (), zones: tuple[str, ...] = ()) -> None:
        self.labels = labels
        self.zones = zones
        self.last: OrderedDict[str, Situation] = OrderedDict()
        """What each object was at its latest message."""
        self.judged: dict[str, Situation] = {}
        """What each object in view was when the model last answered "not met"."""
        self.passers_by: OrderedDict[Situation, float] = OrderedDict()
        """Situations of moving objects judged "not met", with when."""

    def observe(  # noqa: PLR0911 - one return per rule reads best
        self, detection: DetectionLike, now: float, forget_after_s: float
    ) -> WakeReason | None:
        """Take one detection of the watch's camera; why it wakes the watch, or ``None``.

        Args:
            detection: The detection (the caller checked the camera).
            now: The current time.
            forget_after_s: How long a moving situation judged "not met" stays judged
                (``watch.max_unchanged_s``; 0: not at all).
        """
        oid = detection.object_id
        if detection.kind == "end":
            self.last.pop(oid, None)
            self.judged.pop(oid, None)
            return None
        now_in = Situation.of_detection(detection)
        before = self.last.pop(oid, None)
        self.last[oid] = now_in
        while len(self.last) > MAX_OBJECTS:
            gone, _ = self.last.popitem(last=False)
            self.judged.pop(gone, None)
        if not matters(self.labels, self.zones, now_in):
            return None
        judged = self.judged.get(oid)
        if judged == now_in:
            return None
        reason = _change(before, now_in)
        if reason is None:
            return None
        if reason == "entered_zone" and now_in.stationary and judged is not None:
            # A parked car's box jitters across zone borders all day: an object judged
            # parked stays judged while it stays parked, whatever its zones do.
            return None
        if reason in ("new", "entered_zone", "named", "described") and not now_in.stationary:
            seen = self.passers_by.get(now_in)
            if seen is not None and now - seen < forget_after_s:
                return None
        return reason

    def judge(self, objects: Iterable[LiveLike], now: float) -> None:
        """Remember the objects in view when the model answered "not met"."""
        self.judged = {}
        for obj in objects:
            situation = Situation.of_live(obj)
            self.judged[obj.id] = situation
            self.last.setdefault(obj.id, situation)
            if not situation.stationary:
                self.passers_by.pop(situation, None)
                self.passers_by[situation] = now
        while len(self.passers_by) > MAX_PASSERS_BY:
            self.passers_by.popitem(last=False)


def _change(  # noqa: PLR0911 - one return per kind of change
    before: Situation | None, now_in: Situation
) -> WakeReason | None:
    """What is new about an object, from its previous situation to this one."""
    if before is None:
        return "new_stationary" if now_in.stationary else "new"
    if before == now_in:
        return None
    if now_in.stationary and not before.stationary:
        return "stopped"
    if before.stationary and not now_in.stationary:
        return "moved"
    if now_in.sub_label and now_in.sub_label != before.sub_label:
        return "named"
    if now_in.described and not before.described:
        return "described"
    if now_in.zones - before.zones:
        return "entered_zone"
    return None  # it left a zone or lost its name: nothing new to look at

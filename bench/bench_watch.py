"""Camera watch: model calls and alert time under lookout's rules vs Frigate's, on scripted scenes.

Run: ``.venv/bin/python bench/bench_watch.py [--quick]``. ``run(quick)`` returns the rows for
``bench/run_all.py``.

Each scene is an hour on one camera, simulated on a fake clock. Both sides get the same
scripted vision model (same verdicts, same ``next_run_in``, 2 s per call) and the same
scene. Differences are in the rules only:

* **lookout**: the real pure core (``service.watch.machine.decide`` and ``wakes``), the
  real Frigate mirror turning ``frigate/events`` payloads into detections (new, update
  on a change, heartbeat updates of parked objects, zone jitter, end), frames from the
  camera at 1 fps, ``min_interval_s`` 5.
* **upstream**: Frigate's ``VLMWatchRunner`` as specified in frigate-upstream.md section 2:
  the frame taken at the call, then ``_wait_for_trigger(next_run_in)`` over the per-frame
  detection stream (5 fps, every tracked object including stationary ones): with zones
  the first match wakes at once, without zones a match ends the wait 10 s after it began.

Scenes: a car parked in the watched zone all hour and a person walking up to it at minute
40; a busy street (a car every 9 s) where one car stops at minute 30; an empty night where
nothing the watch cares about happens (it times out). Target (issue 8): at most a tenth of
upstream's calls and no later alert. Only the parked car can meet it: on the busy street a
new car wakes the watch at once and with nothing to see the model's ``next_run_in`` sets
the pace, on both sides (the watch issue keeps both rules).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.table import render, row
from service.frigate.mirror import FrigateMirror
from service.frigate.model import Detection
from service.mqtt.topics import TopicMap
from service.settings import FrigateSettings, WatchSettings
from service.watch.machine import (
    Check,
    Expire,
    Stop,
    Wait,
    WaitFrame,
    WatchEvent,
    WatchJob,
    decide,
    wakes,
)
from tests.frigate_replay import tracked_object

LATENCY_S = 2.0
FRAME_INTERVAL_S = 1.0
DETECT_FPS = 5.0
HEARTBEAT_S = 60.0
UPSTREAM_NO_ZONE_COOLDOWN_S = 10.0
HOUR = 3600.0
T0 = 1_767_225_600.0
"""Scene times are seconds from the watch's start; Frigate and the clock see T0 + that."""


# -- scenes --------------------------------------------------------------------------


@dataclass
class Obj:
    """One tracked object: ``path`` is ``[(time, zones, stationary), ...]`` from its start."""

    id: str
    label: str
    path: list[tuple[float, tuple[str, ...], bool]]
    leave: float = math.inf

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
    duration: float = HOUR
    heartbeat_s: float = HEARTBEAT_S
    _by_id: dict[str, Obj] = field(default_factory=dict)

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


def model_answer(scene: Scene, t: float, lazy_parked_s: int | None = None) -> tuple[bool, int]:
    """The scripted vision model: (condition_met, next_run_in) for the scene at ``t``.

    It follows lookout's prompt: 2-5 s when the condition is forming, 10 s while relevant
    objects move, 120 s for an empty or parked scene. ``lazy_parked_s`` makes it ask that
    often whenever any relevant object is in view, parked or not (a model that reads the
    parked car as "relevant objects visible", as upstream's prompt words it).
    """
    if scene.met(scene, t):
        return True, 1
    if scene.forming(scene, t):
        return False, 3
    seen = [(o, z, s) for o, z, s in scene.visible(t) if scene.relevant(o.label, z)]
    if any(not s for _, _, s in seen):
        return False, 10
    if seen and lazy_parked_s is not None:
        return False, lazy_parked_s
    return False, 120


def parked_car(arrival: float = 2400.0) -> Scene:
    """A car parked in the driveway all hour; a person walks up to it at ``arrival``."""
    car = Obj(
        "1700000000.0-car", "car", [(-900.0, ("driveway",), False), (-880.0, ("driveway",), True)]
    )
    # A parked car's box jitters across the zone border now and then (Frigate re-enters it).
    for jitter in (600.0, 1500.0, 2700.0, 3300.0):
        car.path += [(jitter, (), True), (jitter + 2.0, ("driveway",), True)]
    person = Obj(
        "1700002400.0-person",
        "person",
        [(arrival, (), False), (arrival + 3.0, ("driveway",), False)],
        leave=arrival + 120.0,
    )

    def met(s: Scene, t: float) -> bool:
        return any(o.label == "person" and "driveway" in z for o, z, _ in s.visible(t))

    def forming(s: Scene, t: float) -> bool:
        return any(o.label == "person" for o, _, _ in s.visible(t))

    return Scene(
        "parked car, person at 40 min",
        "driveway",
        "someone walks up to the car in the driveway",
        ("person", "car"),
        ("driveway",),
        [car, person],
        met,
        forming,
    )


def busy_street(stop_at: float = 1800.0) -> Scene:
    """A car passes every 9 s (6 s in view); the one at ``stop_at`` stops at the curb."""
    cars = [
        Obj(f"17000{i:05d}.0-car", "car", [(t, ("street",), False)], leave=t + 6.0)
        for i, t in enumerate(x * 9.0 for x in range(int(HOUR / 9)))
        if abs(t - stop_at) > 5
    ]
    stopper = Obj(
        "1700099999.0-car",
        "car",
        [(stop_at, ("street",), False), (stop_at + 6.0, ("street",), True)],
    )

    def met(s: Scene, t: float) -> bool:
        return stopper.at(t) == (("street",), True)

    return Scene(
        "busy street, a car stops at 30 min",
        "front",
        "a car stops in front of the house",
        ("car",),
        (),
        [*cars, stopper],
        met,
    )


def empty_night() -> Scene:
    """Nothing the watch cares about: a cat for a minute, a parked bicycle."""
    cat = Obj("1700001200.0-cat", "cat", [(1200.0, ("lawn",), False)], leave=1260.0)
    bike = Obj("1699990000.0-bicycle", "bicycle", [(-600.0, ("patio",), True)])
    return Scene(
        "empty night",
        "backyard",
        "a person is in the backyard",
        ("person",),
        (),
        [cat, bike],
        lambda _s, _t: False,
    )


# -- Frigate's events for lookout ------------------------------------------------------


def frigate_events(scene: Scene) -> list[tuple[float, bytes]]:
    """``frigate/events`` payloads as Frigate would publish them, by publish time."""
    out: list[tuple[float, bytes]] = []
    for obj in scene.objects:
        last: dict[str, Any] | None = None
        times = sorted(
            {p[0] for p in obj.path}
            | {
                obj.appear + k * scene.heartbeat_s
                for k in range(
                    1,
                    int(min(obj.leave, scene.duration) - obj.appear) // int(scene.heartbeat_s) + 1,
                )
            }
        )
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


# -- lookout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimFrame:
    seq: int
    received_at: float


@dataclass
class Outcome:
    calls: int
    alert_at: float | None
    status: str
    decisions: int = 0


def simulate_lookout(
    scene: Scene, policy: WatchSettings | None = None, lazy_parked_s: int | None = None
) -> Outcome:
    """Run the watch under lookout's rules: the real ``decide`` on a fake clock.

    Inside, times are absolute (``T0 + scene time``) as Frigate stamps them; the outcome
    is in scene time.
    """
    policy = policy or WatchSettings()
    now = [T0 + min(0.0, *(o.appear for o in scene.objects))]
    mirror = FrigateMirror(FrigateSettings(), TopicMap(), clock=lambda: now[0])
    job = WatchJob(
        "bench", "u", scene.camera, scene.condition, T0, T0 + scene.duration,
        labels=scene.labels, zones=scene.zones, max_duration_minutes=int(scene.duration // 60),
    )  # fmt: skip
    pending: list[Detection] = []

    def on_detection(d: Detection) -> None:
        if now[0] >= T0 and job.active and wakes(job, d):
            pending.append(d)

    mirror.subscribe_detections(on_detection)
    events = frigate_events(scene)
    cursor = 0

    def advance(to: float) -> None:
        nonlocal cursor
        while cursor < len(events) and T0 + events[cursor][0] <= to:
            now[0] = max(now[0], T0 + events[cursor][0])
            mirror.handle("frigate/events", events[cursor][1], False)
            cursor += 1
        now[0] = max(now[0], to)

    def frame_at(t: float) -> SimFrame:
        index = int((t - T0) // FRAME_INTERVAL_S)
        return SimFrame(index + 1, T0 + index * FRAME_INTERVAL_S)

    advance(T0)
    job.transition(WatchEvent.START, T0)
    calls = decisions = 0
    while True:
        t = now[0]
        decisions += 1
        action = decide(job, frame_at(t), pending, t, policy)
        if isinstance(action, Stop):
            return Outcome(calls, t - T0, job.status.value, decisions)
        if isinstance(action, Expire):
            job.transition(WatchEvent.TIMEOUT, t)
            return Outcome(calls, t - T0, job.status.value, decisions)
        if isinstance(action, Wait):
            following = T0 + events[cursor][0] if cursor < len(events) else math.inf
            advance(min(action.until, following))
        elif isinstance(action, WaitFrame):
            advance(frame_at(t).received_at + FRAME_INTERVAL_S)
        elif isinstance(action, Check):
            frame = frame_at(t)
            calls += 1
            job.transition(WatchEvent.CHECK, t)
            job.model_calls += 1
            job.last_call_at = t
            pending.clear()
            job.settled = frozenset(o.id for o in mirror.live_objects(scene.camera) if o.stationary)
            met, next_run_in = model_answer(scene, frame.received_at - T0, lazy_parked_s)
            advance(t + LATENCY_S)
            done = now[0]
            job.last_checked_seq = frame.seq
            job.last_verdict_at = done
            job.iterations += 1
            if met:
                job.transition(WatchEvent.MET, done)
                return Outcome(calls, done - T0, job.status.value, decisions)
            job.next_run_at = done + next_run_in
            job.transition(WatchEvent.NOT_MET, done)


# -- upstream --------------------------------------------------------------------------


def simulate_upstream(scene: Scene, lazy_parked_s: int | None = None) -> Outcome:
    """Run the watch under Frigate's rules (frigate-upstream.md 2.3 and 2.4)."""

    def matches(t: float) -> bool:
        return any(scene.relevant(o.label, z) for o, z, _ in scene.visible(t))

    t, calls, end = 0.0, 0, scene.duration
    while True:
        if t > end:
            return Outcome(calls, t, "failed")
        calls += 1
        met, next_run_in = model_answer(scene, t, lazy_parked_s)
        t += LATENCY_S
        if met:
            return Outcome(calls, t, "success")
        start, deadline = t, t + next_run_in
        frame_t = math.ceil(start * DETECT_FPS) / DETECT_FPS
        wake = deadline
        while frame_t < deadline:
            if matches(frame_t):
                wake = (
                    frame_t
                    if scene.zones
                    else min(deadline, max(frame_t, start + UPSTREAM_NO_ZONE_COOLDOWN_S))
                )
                break
            frame_t += 1 / DETECT_FPS
        t = wake


# -- the table -------------------------------------------------------------------------


def _scene_rows(scene: Scene, event_at: float | None) -> list[dict[str, Any]]:
    ours, theirs = simulate_lookout(scene), simulate_upstream(scene)
    # Issue 8's target for every scene; the README says why only the parked car meets it.
    rows = [
        row(
            f"{scene.name}: model calls",
            ours.calls,
            theirs.calls,
            "<= 0.1x upstream",
            ours.calls <= 0.1 * theirs.calls,
        )
    ]
    if event_at is not None and ours.alert_at is not None and theirs.alert_at is not None:
        rows.append(
            row(
                f"{scene.name}: alert after the event",
                ours.alert_at - event_at,
                theirs.alert_at - event_at,
                "<= upstream",
                ours.status == theirs.status == "success" and ours.alert_at <= theirs.alert_at,
                " s",
            )
        )
    else:
        # Upstream looks at the clock only between waits, and sends nothing when it gives up.
        late_ours = (ours.alert_at or 0.0) - scene.duration
        late_theirs = (theirs.alert_at or 0.0) - scene.duration
        rows.append(
            row(
                f"{scene.name}: time-out noticed after the deadline",
                late_ours,
                late_theirs,
                "<= upstream, both failed",
                ours.status == theirs.status == "failed" and late_ours <= late_theirs,
                " s",
            )
        )
    return rows


def _delay(outcome: Outcome, event_at: float) -> float:
    assert outcome.alert_at is not None, outcome
    assert outcome.status == "success", outcome
    return outcome.alert_at - event_at


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The benchmark rows (``figure, lookout, reference, ratio, target, met``)."""
    rows = _scene_rows(parked_car(), 2403.0)
    rows += _scene_rows(busy_street(), 1806.0)
    rows += _scene_rows(empty_night(), None)
    # The person arriving at other moments, across a whole 122 s check cycle: a zone entry
    # just after a check waits out min_interval_s, so the worst case can exceed upstream's.
    offsets = [2400.0 + k * (20.5 if quick else 2.05) for k in range(6 if quick else 60)]
    ours = [_delay(simulate_lookout(parked_car(a)), a + 3) for a in offsets]
    theirs = [_delay(simulate_upstream(parked_car(a)), a + 3) for a in offsets]
    n = len(offsets)
    rows.append(
        row(f"parked car, {n} arrival times: mean alert delay", sum(ours) / n, sum(theirs) / n,
            "<= upstream", sum(ours) <= sum(theirs), " s")
    )  # fmt: skip
    rows.append(
        row(f"parked car, {n} arrival times: worst alert delay", max(ours), max(theirs),
            "info: min_interval_s bounds it", True, " s")
    )  # fmt: skip
    lazy = simulate_lookout(parked_car(), lazy_parked_s=10)
    lazy_up = simulate_upstream(parked_car(), lazy_parked_s=10)
    rows.append(
        row(
            "parked car, model asks 10 s while the car is in view: calls",
            lazy.calls,
            lazy_up.calls,
            "info (lookout honours next_run_in)",
            True,
        )
    )
    started = time.perf_counter()
    simulate_lookout(parked_car())
    elapsed = time.perf_counter() - started
    rows.append(
        row(
            "an hour of watching, simulated",
            elapsed * 1000,
            None,
            "< 1000 ms",
            elapsed < 1.0,
            " ms",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer arrival times")
    args = parser.parse_args()
    print(render(run(quick=args.quick)))
    for scene in (parked_car(), busy_street(), empty_night()):
        ours, theirs = simulate_lookout(scene), simulate_upstream(scene)
        print(
            f"{scene.name}: lookout {ours.calls} calls ({ours.status} at {ours.alert_at:.1f} s), "
            f"upstream {theirs.calls} calls ({theirs.status} at {theirs.alert_at:.1f} s)"
        )


if __name__ == "__main__":
    main()

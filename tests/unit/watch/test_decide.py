"""The change gate, the ceiling and the confirmation of unsure verdicts, on an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.frames.change import compare, thumbnail_from_gray
from service.settings import WatchSettings
from service.watch.decide import (
    Check,
    Compare,
    Skip,
    Wait,
    WaitFrame,
    after_skip,
    after_verdict,
    decide,
)
from service.watch.machine import Reading, WatchJob, WatchStatus
from service.watch.vlm import Verdict

T0 = 1_767_225_600.0
POLICY = WatchSettings(min_interval_s=5, max_frame_age_s=30, max_unchanged_s=1800)


@dataclass(frozen=True)
class F:
    seq: int
    received_at: float

    def age(self, now: float) -> float:
        return now - self.received_at


@dataclass(frozen=True)
class M:
    active: bool
    since: float


@dataclass(frozen=True)
class Obj:
    id: str
    label: str = "person"
    sub_label: str | None = None
    described: bool = False
    current_zones: tuple[str, ...] = ()
    stationary: bool = False


def judged(interval: float = 120, **kw: object) -> WatchJob:
    """A running job whose last verdict (on frame 1 at T0) was "not met, look in ``interval``"."""
    j = WatchJob(
        "j1",
        "alice",
        "porch",
        "a person at the door",
        T0 - 10,
        T0 + 3600,
        status=WatchStatus.CHECKING,
    )
    after_verdict(
        j,
        Verdict(False, int(interval), "nobody", ""),
        frame=F(1, T0),
        judged=[],
        reference=["ref"],
        now=T0,
        policy=POLICY,
    )
    j.last_call_at = T0 - 2
    for key, value in kw.items():
        setattr(j, key, value)
    return j


# -- the change gate ---------------------------------------------------------------------


def test_no_motion_since_the_judged_frame_skips_the_scheduled_check() -> None:
    j = judged()
    quiet = M(False, T0 - 50)
    assert decide(j, F(120, T0 + 120), [], T0 + 120, POLICY, quiet) == Skip("no_motion")
    after_skip(j, Skip("no_motion"), T0 + 120)
    assert j.skipped_unchanged == 1 and j.next_run_at == T0 + 240
    assert decide(j, F(121, T0 + 121), [], T0 + 121, POLICY, quiet) == Wait(T0 + 240, "schedule")


def test_motion_since_then_asks_for_a_comparison_and_its_reading_decides() -> None:
    j = judged()
    for motion in (M(True, T0 + 60), M(False, T0 + 90), None):  # ON now, was ON, no Frigate
        assert decide(j, F(120, T0 + 120), [], T0 + 120, POLICY, motion) == Compare(120)
    j.gate.reading = Reading(changed=False, score=0.03, first_at=T0 + 120, samples=3)
    assert decide(j, F(122, T0 + 122), [], T0 + 122, POLICY, None) == Skip("unchanged")
    after_skip(j, Skip("unchanged"), T0 + 122)
    # The scene was verified unchanged as of the first sample: an OFF before that is old news.
    assert j.gate.verified_at == T0 + 120 and j.gate.reading is None
    assert decide(j, F(250, T0 + 250), [], T0 + 250, POLICY, M(False, T0 + 100)) == Skip(
        "no_motion"
    )
    j.gate.reading = Reading(changed=True, score=0.4, first_at=T0 + 250, samples=3)
    assert decide(j, F(252, T0 + 252), [], T0 + 252, POLICY, None) == Check(252, "changed")


def test_the_ceiling_forces_a_look_however_still_the_scene() -> None:
    j = judged()
    quiet = M(False, T0 - 50)
    now = T0
    while True:
        now = j.next_run_at or now
        action = decide(j, F(int(now - T0) + 1, now), [], now, POLICY, quiet)
        if not isinstance(action, Skip):
            break
        after_skip(j, action, now)
    assert (action, now) == (Check(1801, "ceiling"), T0 + 1800)
    assert j.skipped_unchanged == 14


def test_a_model_expecting_the_condition_is_not_gated() -> None:
    j = judged(interval=3)
    assert decide(j, F(4, T0 + 5), [], T0 + 5, POLICY, M(False, T0 - 50)) == Check(4, "scheduled")


def test_the_gate_can_be_turned_off() -> None:
    off = WatchSettings(min_interval_s=5, max_frame_age_s=30, max_unchanged_s=0)
    j = judged()
    assert decide(j, F(120, T0 + 120), [], T0 + 120, off, M(False, T0 - 50)) == Check(
        120, "scheduled"
    )


def test_thumbnails_see_a_parcel_and_not_a_flicker_or_a_passing_car() -> None:
    rng = np.random.default_rng(3)
    scene = np.clip(110 + rng.normal(0, 30, (24, 32)).repeat(5, 0).repeat(5, 1), 0, 255)

    def shot(gain: float = 1.0, car_x: int | None = None, parcel: bool = False) -> object:
        img = scene * gain + rng.normal(0, 2, scene.shape)
        if car_x is not None:
            img[95:110, car_x : car_x + 30] = 30
        if parcel:
            img[50:60, 80:92] = 220
        return thumbnail_from_gray(np.clip(img, 0, 255))

    reference = [shot(1.0, car_x=10), shot(0.9), shot(1.0)]
    assert not compare(reference, [shot(0.5), shot(0.7), shot(0.6)], 0.12).changed  # dimmer
    assert not compare(reference, [shot(car_x=60), shot(car_x=100), shot()], 0.12).changed
    parcel = compare(reference, [shot(parcel=True), shot(0.8, parcel=True)], 0.12)
    assert parcel.changed and 1 <= parcel.cells <= 10 and not parcel.lighting
    # Most of the picture different at once: light (or a moved camera), not a thing.
    blocks = np.random.default_rng(4).normal(0, 30, (24, 32)).repeat(5, 0).repeat(5, 1)
    other = np.clip(110 + blocks, 0, 255)
    lights_on = compare(reference, [thumbnail_from_gray(other)], 0.12)
    assert lights_on.lighting and not lights_on.changed


# -- confirming an unsure "met" ----------------------------------------------------------


def test_an_unsure_met_is_confirmed_on_the_next_fresh_frame() -> None:
    j = judged()
    j.status = WatchStatus.CHECKING
    unsure = Verdict(True, 1, "a shape by the door", "Someone is at the door.", confidence=0.4)
    step = after_verdict(
        j, unsure, frame=F(300, T0 + 300), judged=[], reference=[], now=T0 + 302, policy=POLICY
    )
    assert step == "confirm" and j.status is WatchStatus.RUNNING and j.confirming
    j.last_call_at = T0 + 300
    # Not on a frame taken before the unsure answer, nor within min_interval_s.
    assert decide(j, F(301, T0 + 301), [], T0 + 303, POLICY) == Wait(T0 + 305, "schedule")
    assert decide(j, F(302, T0 + 301), [], T0 + 305, POLICY) == WaitFrame(
        T0 + 3600, 302, "same_frame"
    )
    assert decide(j, F(303, T0 + 305), [], T0 + 305, POLICY) == Check(303, "confirm")
    # The second look says no: no alert, and the watch goes on as before.
    j.status = WatchStatus.CHECKING
    step = after_verdict(
        j,
        Verdict(False, 120, "a shadow", "", 0.9),
        frame=F(303, T0 + 305),
        judged=[],
        reference=[],
        now=T0 + 307,
        policy=POLICY,
    )
    assert step == "not_met" and not j.confirming and j.next_run_at == T0 + 427


def test_a_second_met_confirms_and_a_sure_met_alerts_at_once() -> None:
    j = judged()
    j.status = WatchStatus.CHECKING
    unsure = Verdict(True, 1, "maybe", "Someone?", confidence=0.3)
    assert (
        after_verdict(
            j, unsure, frame=F(5, T0 + 5), judged=[], reference=[], now=T0 + 6, policy=POLICY
        )
        == "confirm"
    )
    j.status = WatchStatus.CHECKING
    assert (
        after_verdict(
            j, unsure, frame=F(9, T0 + 9), judged=[], reference=[], now=T0 + 10, policy=POLICY
        )
        == "met"
    )
    assert j.status is WatchStatus.SUCCESS and j.notification_message == "Someone?"
    for confidence in (0.9, None):
        k = judged()
        k.status = WatchStatus.CHECKING
        sure = Verdict(True, 1, "yes", "Here.", confidence=confidence)
        assert (
            after_verdict(
                k, sure, frame=F(5, T0 + 5), judged=[], reference=[], now=T0 + 6, policy=POLICY
            )
            == "met"
        )


def test_a_not_met_verdict_judges_the_objects_in_view() -> None:
    j = judged()
    j.status = WatchStatus.CHECKING
    walker = Obj("w1", current_zones=("sidewalk",))
    after_verdict(
        j,
        Verdict(False, 10, "a walker", ""),
        frame=F(9, T0 + 9),
        judged=[walker],
        reference=["r"],
        now=T0 + 10,
        policy=POLICY,
    )
    assert set(j.memory.judged) == {"w1"} and j.gate.verified_at == T0 + 9
    assert j.interval_s == 10 and j.gate.reference == ("r",)


def test_a_retained_frame_is_never_fresh_enough() -> None:
    from service.frames import Frame

    job = WatchJob("j", "u", "cam", "c", T0, T0 + 3600, status=WatchStatus.RUNNING)
    retained = Frame("cam", b"\xff\xd8\xff\xd9", T0, "snapshot", 1, retained=True)
    action = decide(job, retained, [], T0 + 1, POLICY)
    assert action.__class__.__name__ == "WaitFrame"

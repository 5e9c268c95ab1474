"""The wake rules: which detections are news to a watch."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.settings import WatchSettings
from service.watch.decide import Check, Wait, decide
from service.watch.machine import WatchJob, WatchStatus
from service.watch.wake import ObjectMemory

T0 = 1_767_225_600.0
FORGET = 1800.0


@dataclass(frozen=True)
class D:
    object_id: str
    label: str = "car"
    zones: tuple[str, ...] = ()
    stationary: bool = False
    kind: str = "update"
    sub_label: str | None = None
    described: bool = False
    camera: str = "front"
    frame_time: float | None = None


@dataclass(frozen=True)
class Live:
    id: str
    label: str = "car"
    current_zones: tuple[str, ...] = ()
    stationary: bool = False
    sub_label: str | None = None
    described: bool = False


def test_new_stopped_moved_entered_and_named_wake_a_heartbeat_does_not() -> None:
    m = ObjectMemory()
    assert m.observe(D("c1", kind="new"), T0, FORGET) == "new"
    assert m.observe(D("c1"), T0 + 5, FORGET) is None  # nothing changed
    assert m.observe(D("c1", stationary=True), T0 + 10, FORGET) == "stopped"
    assert m.observe(D("c1", stationary=True), T0 + 70, FORGET) is None  # the 60 s update
    assert m.observe(D("c1", zones=("drive",), stationary=True), T0 + 80, FORGET) == "entered_zone"
    assert (
        m.observe(D("c1", zones=("drive",), stationary=True, sub_label="Bob"), T0 + 90, FORGET)
        == "named"
    )
    assert m.observe(D("c1", zones=("drive",), sub_label="Bob"), T0 + 95, FORGET) == "moved"
    assert m.observe(D("c1", kind="end"), T0 + 99, FORGET) is None
    assert "c1" not in m.last


def test_an_object_first_reported_stationary_wakes_like_a_new_one() -> None:
    m = ObjectMemory()
    assert m.observe(D("p1", stationary=True, zones=("drive",)), T0, FORGET) == "new_stationary"


def test_labels_and_zones_filter_but_memory_follows_every_object() -> None:
    m = ObjectMemory(labels=("person",), zones=("porch",))
    assert m.observe(D("c1", kind="new"), T0, FORGET) is None  # a car
    assert m.observe(D("p1", "person", ("sidewalk",), kind="new"), T0, FORGET) is None
    assert m.observe(D("p1", "person", ("porch",)), T0 + 4, FORGET) == "entered_zone"
    assert m.last["c1"].label == "car"


def test_a_judged_object_in_the_same_situation_does_not_wake_again() -> None:
    m = ObjectMemory()
    m.judge([Live("c1", current_zones=("drive",), stationary=True)], T0)
    # Seen for the first time by this watch (its 60 s update): the model judged it already.
    assert m.observe(D("c1", zones=("drive",), stationary=True), T0 + 30, FORGET) is None
    # A parked car's box jitters out of the zone and back: still the judged car.
    assert m.observe(D("c1", stationary=True), T0 + 40, FORGET) is None
    assert m.observe(D("c1", zones=("drive",), stationary=True), T0 + 42, FORGET) is None
    # It drives off: news.
    assert m.observe(D("c1", zones=("drive",)), T0 + 50, FORGET) == "moved"


def test_passers_by_like_one_judged_not_met_do_not_wake_until_they_change() -> None:
    m = ObjectMemory(labels=("car",))
    assert m.observe(D("c1", zones=("street",), kind="new"), T0, FORGET) == "new"
    m.judge([Live("c1", current_zones=("street",))], T0 + 2)
    for k in range(2, 50):  # the hundred cars after it
        assert m.observe(D(f"c{k}", zones=("street",), kind="new"), T0 + 9 * k, FORGET) is None
    assert m.observe(D("c49", zones=("street",), stationary=True), T0 + 460, FORGET) == "stopped"
    # Somewhere else, or after max_unchanged_s, a passer-by is news again.
    assert m.observe(D("c50", zones=("drive",), kind="new"), T0 + 470, FORGET) == "new"
    assert m.observe(D("c51", zones=("street",), kind="new"), T0 + FORGET + 3, FORGET) == "new"
    # A second car parking where one was judged parked is news too.
    m.judge([Live("c60", current_zones=("drive",), stationary=True)], T0 + 500)
    assert (
        m.observe(D("c61", zones=("drive",), stationary=True), T0 + 510, FORGET) == "new_stationary"
    )


@pytest.mark.parametrize("stationary", [False, True])
def test_objects_arriving_together_are_judged_in_one_call(stationary: bool) -> None:
    j = WatchJob(
        "j1",
        "a",
        "front",
        "two people at the door",
        T0,
        T0 + 3600,
        status=WatchStatus.RUNNING,
        next_run_at=T0 + 120,
        last_call_at=T0 - 30,
        last_verdict_at=T0 - 28,
        last_checked_seq=1,
        zones=("porch",),
    )
    wakers = [
        D("p1", "person", ("porch",), stationary, "new", frame_time=T0 + 0.5),
        D("p2", "person", ("porch",), stationary, "new", frame_time=T0 + 1.5),
    ]

    @dataclass(frozen=True)
    class F:
        seq: int
        received_at: float

        def age(self, now: float) -> float:
            return now - self.received_at

    # Not on a frame from before the second arrival: one call sees both.
    assert decide(j, F(2, T0 + 1), wakers, T0 + 2, _policy()).__class__.__name__ == "WaitFrame"
    assert decide(j, F(3, T0 + 2), wakers, T0 + 2, _policy()) == Check(3, "wake")


def test_a_stop_is_looked_at_without_the_unzoned_cooldown() -> None:
    j = WatchJob(
        "j1",
        "a",
        "front",
        "a car stops",
        T0,
        T0 + 3600,
        status=WatchStatus.RUNNING,
        next_run_at=T0 + 120,
        last_call_at=T0 - 3,
        last_verdict_at=T0 - 1,
        last_checked_seq=1,
    )

    @dataclass(frozen=True)
    class F:
        seq: int
        received_at: float

        def age(self, now: float) -> float:
            return now - self.received_at

    passer = [D("c2", zones=("street",), kind="new", frame_time=T0)]
    stop = [D("c1", zones=("street",), stationary=True, frame_time=T0)]
    assert decide(j, F(2, T0 + 2), passer, T0 + 2, _policy()) == Wait(T0 + 9, "schedule")
    assert decide(j, F(2, T0 + 2), stop, T0 + 2, _policy()) == Check(2, "wake")


def _policy() -> WatchSettings:
    return WatchSettings(min_interval_s=5, max_frame_age_s=30)


def test_a_description_arriving_for_a_judged_object_is_news() -> None:
    m = ObjectMemory()
    m.judge([Live("p1", label="person", current_zones=("porch",), stationary=True)], T0)
    same = D("p1", label="person", zones=("porch",), stationary=True)
    assert m.observe(same, T0 + 5, FORGET) is None
    described = D("p1", label="person", zones=("porch",), stationary=True, described=True)
    assert m.observe(described, T0 + 9, FORGET) == "described"
    assert m.observe(described, T0 + 70, FORGET) is None  # told once

"""The pure watch core: every (status, event) pair, and decide()'s rules on a fake clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.bench_watch import (
    busy_street,
    empty_night,
    parked_car,
    simulate_lookout,
    simulate_upstream,
)
from service.frigate.model import Detection
from service.settings import WatchSettings
from service.watch.decide import Check, Expire, Stop, Wait, WaitFrame, backoff_delay, decide
from service.watch.machine import (
    TRANSITIONS,
    IllegalTransition,
    WatchEvent,
    WatchJob,
    WatchStatus,
    iso,
)

S, E = WatchStatus, WatchEvent
T0 = 1_767_225_600.0
POLICY = WatchSettings(
    min_interval_s=5, max_frame_age_s=30, error_backoff_s=5, error_backoff_max_s=120
)

# The specification, written out independently of the module's table.
EXPECTED = {
    (S.PENDING, E.START): S.RUNNING,
    (S.RUNNING, E.CHECK): S.CHECKING,
    (S.RUNNING, E.FRAME_LOST): S.WAITING_FOR_FRAME,
    (S.WAITING_FOR_FRAME, E.FRAME_FOUND): S.RUNNING,
    (S.CHECKING, E.NOT_MET): S.RUNNING,
    (S.CHECKING, E.WEAK_MET): S.RUNNING,
    (S.CHECKING, E.MET): S.SUCCESS,
    (S.CHECKING, E.ERROR): S.BACKOFF,
    (S.BACKOFF, E.RETRY): S.RUNNING,
}
for _active in (S.PENDING, S.RUNNING, S.WAITING_FOR_FRAME, S.CHECKING, S.BACKOFF):
    EXPECTED[(_active, E.TIMEOUT)] = S.FAILED
    EXPECTED[(_active, E.FAIL)] = S.FAILED
    EXPECTED[(_active, E.CANCEL)] = S.CANCELLED
    EXPECTED[(_active, E.RESUME)] = S.PENDING


def job(**kw: object) -> WatchJob:
    base: dict[str, object] = {
        "id": "j1",
        "user": "alice",
        "camera": "driveway",
        "condition": "a person at the car",
        "created_at": T0,
        "deadline": T0 + 3600,
        "status": S.RUNNING,
    }
    base.update(kw)
    return WatchJob(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class F:
    seq: int
    received_at: float

    def age(self, now: float) -> float:
        return now - self.received_at


def det(
    object_id: str = "o1",
    label: str = "person",
    *,
    camera: str = "driveway",
    zones: tuple[str, ...] = (),
    new_zones: tuple[str, ...] = (),
    stationary: bool = False,
    kind: str = "new",
    first_seen: bool = True,
    became_active: bool = False,
    frame_time: float | None = None,
) -> Detection:
    return Detection(
        camera=camera,
        object_id=object_id,
        label=label,
        sub_label=None,
        zones=zones,
        new_zones=new_zones,
        stationary=stationary,
        kind=kind,  # type: ignore[arg-type]
        entered_new_zone=bool(new_zones),
        became_active=became_active,
        first_seen=first_seen,
        frame_time=frame_time,
    )


# -- transitions -------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "event"), list(itertools.product(S, E)))
def test_every_status_event_pair(status: WatchStatus, event: WatchEvent) -> None:
    j = job(status=status)
    expected = EXPECTED.get((status, event))
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            j.transition(event, T0 + 5)
        assert j.status is status and j.ended_at is None
        assert info.value.status is status and info.value.event is event
        assert not j.can(event)
    else:
        assert j.can(event)
        assert j.transition(event, T0 + 5) is expected
        assert j.status is expected and j.updated_at == T0 + 5


def test_the_module_table_is_the_specification() -> None:
    table = {(s, e): t for s, events in TRANSITIONS.items() for e, t in events.items()}
    assert table == EXPECTED


@pytest.mark.parametrize(
    ("status", "event", "reason"),
    [
        (S.CHECKING, E.MET, "condition_met"),
        (S.RUNNING, E.TIMEOUT, "timeout"),
        (S.BACKOFF, E.FAIL, "error"),
        (S.WAITING_FOR_FRAME, E.CANCEL, "cancelled"),
    ],
)
def test_terminal_transitions_stamp_the_end(
    status: WatchStatus, event: WatchEvent, reason: str
) -> None:
    j = job(status=status)
    j.transition(event, T0 + 42)
    assert j.status.terminal and not j.active
    assert j.ended_at == T0 + 42 and j.end_reason == reason
    assert j.state()["ended_at_iso"] == iso(T0 + 42) == "2026-01-01T00:00:42+00:00"


def test_state_payload_has_times_as_unix_and_iso() -> None:
    state = job(labels=("person",), zones=("driveway",), next_run_at=T0 + 60).state()
    assert state["status"] == "running" and state["labels"] == ["person"]
    assert state["next_check_at"] == T0 + 60 and state["next_check_at_iso"].endswith(
        "00:01:00+00:00"
    )
    assert state["ended_at"] is None and state["ended_at_iso"] is None


# -- decide ------------------------------------------------------------------------------


def test_first_check_at_once() -> None:
    assert decide(job(), F(1, T0), [], T0, POLICY) == Check(1, "first")


def test_no_frame_or_a_stale_one_is_never_shown_to_the_model() -> None:
    assert decide(job(), None, [], T0, POLICY) == WaitFrame(T0 + 3600, 0, "no_frame")
    assert decide(job(), F(7, T0 - 31), [], T0, POLICY) == WaitFrame(T0 + 3600, 7, "stale_frame")


def test_the_model_asked_for_later() -> None:
    j = job(next_run_at=T0 + 120, last_call_at=T0 - 2, last_checked_seq=1)
    assert decide(j, F(2, T0), [], T0, POLICY) == Wait(T0 + 120, "schedule")
    assert decide(j, F(9, T0 + 120), [], T0 + 120, POLICY) == Check(9, "scheduled")


def test_no_second_call_on_the_same_frame() -> None:
    j = job(next_run_at=T0 + 10, last_call_at=T0, last_checked_seq=4)
    assert decide(j, F(4, T0 + 9), [], T0 + 11, POLICY) == WaitFrame(T0 + 3600, 4, "same_frame")


def test_min_interval_holds_back_even_a_wake() -> None:
    j = job(next_run_at=T0 + 300, last_call_at=T0, last_checked_seq=1, zones=("driveway",))
    woke = [det(zones=("driveway",), new_zones=("driveway",))]
    assert decide(j, F(2, T0 + 1), woke, T0 + 2, POLICY) == Wait(T0 + 5, "schedule")
    assert decide(j, F(3, T0 + 5), woke, T0 + 5, POLICY) == Check(3, "wake")


def test_a_wake_waits_for_a_frame_taken_after_the_detection() -> None:
    j = job(next_run_at=T0 + 300, last_call_at=T0, last_checked_seq=1)
    woke = [det(frame_time=T0 + 20.5)]
    assert decide(j, F(2, T0 + 20), woke, T0 + 21, POLICY) == WaitFrame(T0 + 3600, 2, "same_frame")
    assert decide(j, F(3, T0 + 21), woke, T0 + 21, POLICY) == Check(3, "wake")
    # Frigate's clock ahead of ours: any unjudged frame will do.
    ahead = [det(frame_time=T0 + 99)]
    assert decide(j, F(2, T0 + 20), ahead, T0 + 21, POLICY) == Check(2, "wake")


def test_without_zones_wakes_are_spaced_by_the_cooldown() -> None:
    j = job(next_run_at=T0 + 300, last_call_at=T0, last_verdict_at=T0 + 2, last_checked_seq=1)
    woke = [det()]
    assert decide(j, F(2, T0 + 6), woke, T0 + 6, POLICY) == Wait(T0 + 12, "schedule")
    assert decide(j, F(3, T0 + 12), woke, T0 + 12, POLICY) == Check(3, "wake")


def test_deadline_expires_and_caps_every_wait() -> None:
    j = job(next_run_at=T0 + 3700, last_call_at=T0 + 3500, last_checked_seq=1)
    assert decide(j, F(2, T0 + 3590), [], T0 + 3590, POLICY) == Wait(T0 + 3600, "schedule")
    assert decide(j, F(2, T0 + 3600), [], T0 + 3600, POLICY) == Expire()


def test_backoff_then_retry_on_the_same_frame() -> None:
    j = job(status=S.BACKOFF, retry_at=T0 + 20, last_call_at=T0, next_run_at=T0 + 20)
    assert decide(j, F(1, T0 + 10), [det()], T0 + 10, POLICY) == Wait(T0 + 20, "backoff")
    # The failed call judged nothing, so the same frame may be tried again.
    assert decide(j, F(1, T0 + 19), [], T0 + 20, POLICY) == Check(1, "retry")


@pytest.mark.parametrize("status", [S.SUCCESS, S.FAILED, S.CANCELLED])
def test_finished_jobs_stop(status: WatchStatus) -> None:
    assert decide(job(status=status), F(1, T0), [det()], T0, POLICY) == Stop()


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, POLICY) for n in (1, 2, 3, 4, 5, 6, 7, 50)] == [
        5,
        10,
        20,
        40,
        80,
        120,
        120,
        120,
    ]


# -- properties --------------------------------------------------------------------------


@given(
    now=st.floats(0, 4000),
    seq=st.integers(0, 5),
    checked=st.integers(0, 5),
    age=st.floats(0, 60),
    last_call=st.one_of(st.none(), st.floats(-100, 4000)),
    next_run=st.one_of(st.none(), st.floats(-100, 4000)),
    status=st.sampled_from([S.RUNNING, S.WAITING_FOR_FRAME, S.BACKOFF]),
    woken=st.booleans(),
)
def test_decide_never_breaks_the_call_rules(
    now: float,
    seq: int,
    checked: int,
    age: float,
    last_call: float | None,
    next_run: float | None,
    status: WatchStatus,
    woken: bool,
) -> None:
    j = job(status=status, last_call_at=None if last_call is None else T0 + last_call,
            next_run_at=None if next_run is None else T0 + next_run, last_checked_seq=checked,
            retry_at=None if next_run is None else T0 + next_run)  # fmt: skip
    frame = F(seq, T0 + now - age) if seq else None
    action = decide(j, frame, [det()] if woken else [], T0 + now, POLICY)
    if isinstance(action, Check):
        assert frame is not None and action.frame_seq == frame.seq
        assert T0 + now < j.deadline and age <= POLICY.max_frame_age_s
        assert frame.seq > checked
        assert last_call is None or now >= last_call + POLICY.min_interval_s
    if isinstance(action, Wait):
        assert action.until <= j.deadline and action.until > T0 + now
    assert not isinstance(action, Stop)


# -- an hour, scripted -------------------------------------------------------------------


def test_an_hour_with_a_parked_car_costs_a_tenth_of_upstream_and_alerts_no_later() -> None:
    ours, theirs = simulate_lookout(parked_car()), simulate_upstream(parked_car())
    assert ours.status == theirs.status == "success"
    assert ours.calls * 10 <= theirs.calls
    assert 2403 <= ours.alert_at <= theirs.alert_at  # type: ignore[operator]
    # Event-driven: decisions track events and checks, not seconds of simulated time.
    assert ours.decisions < 300


def test_busy_street_and_empty_night_cost_a_tenth_of_upstream() -> None:
    for scene in (busy_street(), empty_night()):
        ours, theirs = simulate_lookout(scene), simulate_upstream(scene)
        assert ours.status == theirs.status
        assert ours.calls * 10 <= theirs.calls
        assert ours.alert_at <= theirs.alert_at  # type: ignore[operator]
    night = simulate_lookout(empty_night())
    assert night.status == "failed" and night.alert_at == 3600

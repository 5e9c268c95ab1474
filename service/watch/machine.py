"""The camera watch as a pure state machine: statuses, transitions, and what to do next.

This module does no I/O and reads no clock: every function takes ``now``. The runner in
:mod:`service.watch.runner` does the waiting, the model calls and the publishing, and asks
:func:`decide` what to do each time something happens. So an hour of watching is a loop
over scripted frames and detections that a test runs in milliseconds.

The whole machine on one screen (``TRANSITIONS``)::

    pending ──start──▶ running ──check──▶ checking ──not_met──▶ running
                         │  ▲                 │ ├──met──▶ success
              frame_lost │  │ frame_found     │ └──error──▶ backoff ──retry──▶ running
                         ▼  │
                   waiting_for_frame
    any active ──timeout / fail──▶ failed      any active ──cancel──▶ cancelled
    any active ──resume──▶ pending (after a restart)

``success``, ``failed`` and ``cancelled`` are terminal, as in Frigate's job states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

from service.settings import WatchSettings


class WatchStatus(StrEnum):
    """Where a watch is; the value is what the state topic and replies carry."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_FRAME = "waiting_for_frame"
    CHECKING = "checking"
    BACKOFF = "backoff"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the watch is over."""
        return self in TERMINAL


TERMINAL: Final = frozenset({WatchStatus.SUCCESS, WatchStatus.FAILED, WatchStatus.CANCELLED})


class WatchEvent(StrEnum):
    """What happens to a watch."""

    START = "start"
    FRAME_LOST = "frame_lost"
    FRAME_FOUND = "frame_found"
    CHECK = "check"
    NOT_MET = "not_met"
    MET = "met"
    ERROR = "error"
    RETRY = "retry"
    TIMEOUT = "timeout"
    FAIL = "fail"
    CANCEL = "cancel"
    RESUME = "resume"


EndReason = Literal["condition_met", "timeout", "error", "cancelled"]

S, E = WatchStatus, WatchEvent
_ENDINGS: Final[dict[WatchEvent, WatchStatus]] = {
    E.TIMEOUT: S.FAILED,
    E.FAIL: S.FAILED,
    E.CANCEL: S.CANCELLED,
    E.RESUME: S.PENDING,
}
TRANSITIONS: Final[dict[WatchStatus, dict[WatchEvent, WatchStatus]]] = {
    S.PENDING: {E.START: S.RUNNING, **_ENDINGS},
    S.RUNNING: {E.CHECK: S.CHECKING, E.FRAME_LOST: S.WAITING_FOR_FRAME, **_ENDINGS},
    S.WAITING_FOR_FRAME: {E.FRAME_FOUND: S.RUNNING, **_ENDINGS},
    S.CHECKING: {E.NOT_MET: S.RUNNING, E.MET: S.SUCCESS, E.ERROR: S.BACKOFF, **_ENDINGS},
    S.BACKOFF: {E.RETRY: S.RUNNING, **_ENDINGS},
    S.SUCCESS: {},
    S.FAILED: {},
    S.CANCELLED: {},
}
"""``TRANSITIONS[status][event]`` is the next status; a missing entry is illegal."""

_END_REASONS: Final[dict[WatchEvent, EndReason]] = {
    E.MET: "condition_met",
    E.TIMEOUT: "timeout",
    E.FAIL: "error",
    E.CANCEL: "cancelled",
}


class IllegalTransition(RuntimeError):  # noqa: N818 - the name says what it is
    """An event that the watch's current status does not allow."""

    def __init__(self, status: WatchStatus, event: WatchEvent) -> None:
        super().__init__(f"a {status.value} watch cannot take {event.value!r}")
        self.status = status
        self.event = event


class FrameLike(Protocol):
    """What :func:`decide` reads of a frame (``service.frames.latest.Frame`` fits)."""

    @property
    def seq(self) -> int:
        """Increases with every frame the store accepts."""

    @property
    def received_at(self) -> float:
        """When the frame arrived (same clock as ``now``)."""


class DetectionLike(Protocol):
    """What :func:`wakes` reads of a detection (``service.frigate.model.Detection`` fits)."""

    @property
    def camera(self) -> str: ...  # noqa: D102
    @property
    def object_id(self) -> str: ...  # noqa: D102
    @property
    def label(self) -> str: ...  # noqa: D102
    @property
    def zones(self) -> tuple[str, ...]: ...  # noqa: D102
    @property
    def new_zones(self) -> tuple[str, ...]: ...  # noqa: D102
    @property
    def stationary(self) -> bool: ...  # noqa: D102
    @property
    def first_seen(self) -> bool: ...  # noqa: D102
    @property
    def became_active(self) -> bool: ...  # noqa: D102
    @property
    def wakes(self) -> bool: ...  # noqa: D102
    @property
    def frame_time(self) -> float | None: ...  # noqa: D102


@dataclass(slots=True)
class WatchJob:
    """One watch: what it waits for, where it is, and what it has seen so far.

    Times are unix seconds of the injected clock. ``last_checked_seq`` and ``settled``
    live only in memory: frame numbers restart with the process, and the objects parked
    at the last check are learned again at the first check after a restart.
    """

    id: str
    user: str
    camera: str
    condition: str
    created_at: float
    deadline: float
    labels: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    max_duration_minutes: int = 60
    source: Literal["request", "chat"] = "request"
    request_id: str | None = None
    status: WatchStatus = WatchStatus.PENDING
    ended_at: float | None = None
    end_reason: EndReason | None = None
    iterations: int = 0
    """Verdicts received."""
    model_calls: int = 0
    """Calls made, failed ones included."""
    wakeups: int = 0
    """Checks brought forward by a detection."""
    last_call_at: float | None = None
    last_verdict_at: float | None = None
    next_run_at: float | None = None
    """When the model asked to look again; ``None`` means at once (the first check)."""
    retry_at: float | None = None
    errors: int = 0
    """Failed calls in a row."""
    last_error: str | None = None
    last_reasoning: str = ""
    notification_message: str = ""
    alerted: bool = False
    """The alert of a finished job went out (a crash before it re-sends it at start)."""
    updated_at: float = 0.0
    last_checked_seq: int = 0
    settled: frozenset[str] = field(default_factory=frozenset)
    """Ids of the objects that were stationary on the camera at the last check."""

    def transition(self, event: WatchEvent, now: float) -> WatchStatus:
        """Apply ``event``; returns the new status.

        Raises:
            IllegalTransition: ``event`` is not allowed in the current status.
        """
        target = TRANSITIONS[self.status].get(event)
        if target is None:
            raise IllegalTransition(self.status, event)
        self.status = target
        self.updated_at = now
        if target.terminal:
            self.ended_at = now
            self.end_reason = _END_REASONS[event]
        return target

    def can(self, event: WatchEvent) -> bool:
        """Whether ``event`` is allowed now."""
        return event in TRANSITIONS[self.status]

    @property
    def active(self) -> bool:
        """Not finished."""
        return not self.status.terminal

    def state(self) -> dict[str, Any]:
        """The retained state payload (and the body of `get`); times as unix and ISO 8601."""
        body: dict[str, Any] = {
            "job_id": self.id,
            "user": self.user,
            "camera": self.camera,
            "condition": self.condition,
            "labels": list(self.labels),
            "zones": list(self.zones),
            "status": self.status.value,
            "source": self.source,
            "max_duration_minutes": self.max_duration_minutes,
            "iterations": self.iterations,
            "model_calls": self.model_calls,
            "wakeups": self.wakeups,
            "last_reasoning": self.last_reasoning,
            "notification_message": self.notification_message,
            "last_error": self.last_error,
            "errors": self.errors,
            "end_reason": self.end_reason,
            "alerted": self.alerted,
        }
        times = {
            "created_at": self.created_at,
            "deadline": self.deadline,
            "ended_at": self.ended_at,
            "last_check_at": self.last_call_at,
            "next_check_at": self.next_run_at if self.active else None,
            "updated_at": self.updated_at,
        }
        for key, value in times.items():
            body[key] = value
            body[f"{key}_iso"] = iso(value)
        return body


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, or ``None``."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Check:
    """Call the model now on frame ``frame_seq``."""

    frame_seq: int
    reason: Literal["first", "scheduled", "wake", "retry"]


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until ``until`` (or until a detection or cancel wakes the job)."""

    until: float
    reason: Literal["schedule", "backoff"]


@dataclass(frozen=True, slots=True)
class WaitFrame:
    """A check is due (or no usable frame exists): wait for a frame newer than ``after_seq``.

    ``reason`` is ``no_frame`` (none at all), ``stale_frame`` (older than
    ``max_frame_age_s``) or ``same_frame`` (the newest was already judged, or was taken
    before the detection that woke the job).
    """

    until: float
    after_seq: int
    reason: Literal["no_frame", "stale_frame", "same_frame"]


@dataclass(frozen=True, slots=True)
class Expire:
    """The job's time is up."""


@dataclass(frozen=True, slots=True)
class Stop:
    """The job is finished; nothing more to do."""


Action = Check | Wait | WaitFrame | Expire | Stop


def wakes(job: WatchJob, detection: DetectionLike) -> bool:
    """Whether ``detection`` should bring the job's next check forward.

    It must be on the job's camera, match its labels (any) and zones (intersect), and
    be news: a new moving object, a zone entry or a parked object starting to move
    (``Detection.wakes``). With zones, only entering one of the watched zones counts. An
    object that was stationary at the last check and still is never wakes, whatever its
    zones do: a parked car's box jitters across zone borders all day.
    """
    if detection.camera != job.camera or not detection.wakes:
        return False
    if job.labels and detection.label not in job.labels:
        return False
    if job.zones and not set(detection.zones) & set(job.zones):
        return False
    if detection.stationary and detection.object_id in job.settled:
        return False
    if job.zones and not (detection.first_seen or detection.became_active):
        return bool(set(detection.new_zones) & set(job.zones))
    return True


def decide(  # noqa: PLR0911 - one return per rule reads best
    job: WatchJob,
    frame: FrameLike | None,
    detections: Iterable[DetectionLike],
    now: float,
    policy: WatchSettings,
) -> Action:
    """What the job should do now.

    Args:
        job: The job.
        frame: The camera's newest frame, or ``None``.
        detections: Detections received since the last check began.
        now: The current time.
        policy: Intervals and limits.

    Returns:
        ``Stop`` for a finished job; ``Expire`` at the deadline; ``Wait`` during a
        backoff or until the next scheduled check; ``WaitFrame`` when no frame can be
        shown (none, too old, or already judged); otherwise ``Check``.
    """
    if job.status.terminal:
        return Stop()
    if now >= job.deadline:
        return Expire()
    if job.status is WatchStatus.BACKOFF and job.retry_at is not None and now < job.retry_at:
        return Wait(min(job.retry_at, job.deadline), "backoff")
    if frame is None:
        return WaitFrame(job.deadline, 0, "no_frame")
    if now - frame.received_at > policy.max_frame_age_s:
        return WaitFrame(job.deadline, frame.seq, "stale_frame")
    waking = [d for d in detections if wakes(job, d)]
    due, reason = _due(job, bool(waking), now, policy)
    if due > now:
        return Wait(min(due, job.deadline), "schedule")
    if frame.seq <= job.last_checked_seq:
        return WaitFrame(job.deadline, job.last_checked_seq, "same_frame")
    if reason == "wake" and frame.received_at < _seen_at(waking, now):
        # The frame predates what woke us: the model would not see the newcomer.
        return WaitFrame(job.deadline, frame.seq, "same_frame")
    return Check(frame.seq, reason)


def _due(
    job: WatchJob, woken: bool, now: float, policy: WatchSettings
) -> tuple[float, Literal["first", "scheduled", "wake", "retry"]]:
    """When the next check is due, and why; never sooner than ``min_interval_s`` after the last."""
    reason: Literal["first", "scheduled", "wake", "retry"]
    if job.status is WatchStatus.BACKOFF:
        due, reason = now, "retry"
    elif job.next_run_at is None:
        due, reason = now, "first"
    elif woken:
        due, reason = now, "wake"
        if not job.zones and job.last_verdict_at is not None:
            # Without zones every passer-by anywhere in the image is new: a burst of them
            # wakes once per cooldown, as in Frigate, not once per passer-by.
            due = max(due, job.last_verdict_at + policy.unzoned_wake_cooldown_s)
    else:
        due, reason = job.next_run_at, "scheduled"
    if job.last_call_at is not None:
        due = max(due, job.last_call_at + policy.min_interval_s)
    return due, reason


def _seen_at(detections: list[DetectionLike], now: float) -> float:
    """Frigate's frame time of the latest waking detection (one from the future is ignored).

    Frigate's clock is not lookout's: a detection stamped ahead of ``now`` only asks for
    some frame the model has not judged, or clock skew would hold the check back.
    """
    times = [d.frame_time for d in detections if d.frame_time is not None and d.frame_time <= now]
    return max(times, default=float("-inf"))


def backoff_delay(errors: int, policy: WatchSettings) -> float:
    """Seconds to wait after ``errors`` failed calls in a row (doubling, capped)."""
    exponent = max(0, min(errors - 1, 30))
    return float(min(policy.error_backoff_max_s, policy.error_backoff_s * 2**exponent))

"""The camera watch as a pure state machine: statuses, transitions and the job's state.

This module does no I/O and reads no clock: every function takes ``now``. What to do next
is :func:`service.watch.decide.decide`; the runner in :mod:`service.watch.runner` does the
waiting, the model calls and the publishing. So an hour of watching is a loop over
scripted frames and detections that a test runs in milliseconds.

The whole machine on one screen (``TRANSITIONS``)::

    pending ──start──▶ running ──check──▶ checking ──not_met──▶ running
                         │  ▲                 │ ├──weak_met──▶ running (confirm next)
              frame_lost │  │ frame_found     │ ├──met──▶ success
                         ▼  │                 │ └──error──▶ backoff ──retry──▶ running
                   waiting_for_frame
    any active ──timeout / fail──▶ failed      any active ──cancel──▶ cancelled
    any active ──resume──▶ pending (after a restart)

``success``, ``failed`` and ``cancelled`` are terminal, as in Frigate's job states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

from service.watch.wake import ObjectMemory


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
    WEAK_MET = "weak_met"
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
    S.CHECKING: {
        E.NOT_MET: S.RUNNING,
        E.WEAK_MET: S.RUNNING,
        E.MET: S.SUCCESS,
        E.ERROR: S.BACKOFF,
        **_ENDINGS,
    },
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

    def age(self, now: float) -> float:
        """Seconds since it was taken; infinite when unknown (a retained message)."""


class MotionLike(Protocol):
    """What the change gate reads of Frigate's motion (``service.frigate.MotionState`` fits)."""

    @property
    def active(self) -> bool:
        """Frigate sees motion now."""

    @property
    def since(self) -> float:
        """When ``active`` last changed (same clock as ``now``)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the thumbnails said about a due check: did the scene change since it was judged?

    Attributes:
        changed: The scene changed (or there was nothing to compare with).
        score: The largest cell difference.
        first_at: When the first sample of the scene now was taken.
        samples: How many samples of the scene now were compared.
    """

    changed: bool
    score: float
    first_at: float
    samples: int = 1


@dataclass(slots=True)
class GateMemory:
    """The change gate's view of the scene the model last judged (memory only).

    Attributes:
        reference: Thumbnails of the judged frame and the frames right after it
            (opaque here: :mod:`service.frames.change` makes and compares them).
        verified_at: Up to when the scene is known to be the one judged: the judged
            frame's time, moved on by every comparison that found no change.
        reading: A comparison made for the check now due, until it is used.
    """

    reference: Sequence[object] = ()
    verified_at: float | None = None
    reading: Reading | None = None


@dataclass(slots=True)
class WatchJob:
    """One watch: what it waits for, where it is, and what it has seen so far.

    Times are unix seconds of the injected clock. ``last_checked_seq``, ``interval_s``,
    ``confirming``, ``memory`` and ``gate`` live only in memory: frame numbers restart
    with the process, a resumed job looks at once, and what it judged is learned again
    at that first check.
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
    skipped_unchanged: int = 0
    """Checks the model asked for and the change gate skipped (nothing had changed)."""
    confirmations: int = 0
    """Calls made to confirm an unsure "met" on a fresh frame."""
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
    warning: str | None = None
    """Set at start when lookout can get only Frigate's cropped snapshots of the camera."""
    updated_at: float = 0.0
    last_checked_seq: int = 0
    interval_s: float | None = None
    """The model's last ``next_run_in``: the pace of checks while nothing wakes the job."""
    confirming: bool = False
    """The last verdict was an unsure "met": the next fresh frame decides."""
    weak_at: float | None = None
    """When that unsure verdict came; the confirming frame must be newer."""
    memory: ObjectMemory = field(default_factory=ObjectMemory)
    """The objects seen and judged on the camera (see :mod:`service.watch.wake`)."""
    gate: GateMemory = field(default_factory=GateMemory)

    def __post_init__(self) -> None:
        self.memory.labels, self.memory.zones = self.labels, self.zones

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
            "skipped_unchanged": self.skipped_unchanged,
            "confirmations": self.confirmations,
            "confirming": self.confirming,
            "last_reasoning": self.last_reasoning,
            "notification_message": self.notification_message,
            "last_error": self.last_error,
            "errors": self.errors,
            "end_reason": self.end_reason,
            "alerted": self.alerted,
        }
        if self.warning:
            body["warning"] = self.warning
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

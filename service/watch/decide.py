"""What a watch does next: :func:`decide`, pure, with an injected clock.

The runner calls :func:`decide` whenever something happens (a frame, a detection, a
timer, a verdict) and does what it answers. The rules, in order:

* A finished job stops; at its deadline it expires; in a backoff it waits.
* No frame, or one older than ``max_frame_age_s``: wait for a frame (never call the
  model without one, never twice on the same frame).
* A check is due at once for the first look, a retry, a wake (a detection that is news,
  see :mod:`service.watch.wake`) and the confirmation of an unsure "met"; otherwise when
  the model asked (``next_run_in``), and never sooner than ``min_interval_s`` after the
  last call began.
* **The change gate.** A check the model scheduled is made only if the scene changed
  since the frame it judged: not when Frigate's motion detector has seen no motion since
  then (``Skip("no_motion")``), else not when a comparison of thumbnails finds none
  (``Compare`` asks the runner for one; ``Skip("unchanged")``). The model's previous
  verdict stands and the next check is scheduled. Exempt: a model that asked to look
  again within ``FORMING_S`` (it expects the condition any moment), and the look forced
  ``max_unchanged_s`` after the last verdict (``ceiling``), so a change the gate cannot
  see is not missed forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from service.settings import WatchSettings
from service.watch.machine import FrameLike, MotionLike, WatchEvent, WatchJob, WatchStatus
from service.watch.vlm import Verdict
from service.watch.wake import DetectionLike, LiveLike

FORMING_S: Final = 5.0
"""A model that asks to look again this soon expects the condition: no gate then."""

CheckReason = Literal["first", "scheduled", "changed", "ceiling", "wake", "confirm", "retry"]


@dataclass(frozen=True, slots=True)
class Check:
    """Call the model now on frame ``frame_seq``."""

    frame_seq: int
    reason: CheckReason


@dataclass(frozen=True, slots=True)
class Compare:
    """A scheduled check is due: compare the scene now with the judged one, then decide again."""

    frame_seq: int


@dataclass(frozen=True, slots=True)
class Skip:
    """A scheduled check is due but nothing changed: no call; schedule the next one."""

    reason: Literal["no_motion", "unchanged"]


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
    before what the check must see: the detection that woke the job, or the unsure
    verdict to confirm).
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


Action = Check | Compare | Skip | Wait | WaitFrame | Expire | Stop


def decide(  # noqa: PLR0911, PLR0912 - one return per rule reads best
    job: WatchJob,
    frame: FrameLike | None,
    wakers: Sequence[DetectionLike],
    now: float,
    policy: WatchSettings,
    motion: MotionLike | None = None,
) -> Action:
    """What the job should do now.

    Args:
        job: The job.
        frame: The camera's newest frame, or ``None``.
        wakers: Detections that woke the job since its last check began.
        now: The current time.
        policy: Intervals and limits.
        motion: Frigate's motion state of the camera (``None``: never heard).

    Returns:
        The action (see the module docstring).
    """
    if job.status.terminal:
        return Stop()
    if now >= job.deadline:
        return Expire()
    if job.status is WatchStatus.BACKOFF and job.retry_at is not None and now < job.retry_at:
        return Wait(min(job.retry_at, job.deadline), "backoff")
    if frame is None:
        return WaitFrame(job.deadline, 0, "no_frame")
    if frame.age(now) > policy.max_frame_age_s:
        # A retained frame (or Frigate's preview of an offline camera) has no known age
        # and is never fresh enough to judge.
        return WaitFrame(job.deadline, frame.seq, "stale_frame")
    due, reason = _due(job, wakers, now, policy)
    if due > now:
        return Wait(min(due, job.deadline), "schedule")
    if frame.seq <= job.last_checked_seq:
        return WaitFrame(job.deadline, job.last_checked_seq, "same_frame")
    if reason == "wake" and frame.received_at < _seen_at(wakers, now):
        # The frame predates what woke us: the model would not see the newcomer.
        return WaitFrame(job.deadline, frame.seq, "same_frame")
    if reason == "confirm" and job.weak_at is not None and frame.received_at < job.weak_at:
        # Confirming on a frame taken before the unsure answer would ask the same question.
        return WaitFrame(job.deadline, frame.seq, "same_frame")
    if reason == "scheduled" and gated(job, policy):
        gate = job.gate
        assert gate.verified_at is not None  # noqa: S101 - gated() checks
        if motion is not None and not motion.active and motion.since <= gate.verified_at:
            return Skip("no_motion")
        if gate.reading is None:
            return Compare(frame.seq)
        if not gate.reading.changed:
            return Skip("unchanged")
        reason = "changed"
    return Check(frame.seq, reason)


def gated(job: WatchJob, policy: WatchSettings) -> bool:
    """Whether the job's scheduled checks go through the change gate."""
    return (
        policy.max_unchanged_s > 0
        and job.gate.verified_at is not None
        and job.interval_s is not None
        and job.interval_s > FORMING_S
    )


def _due(
    job: WatchJob, wakers: Sequence[DetectionLike], now: float, policy: WatchSettings
) -> tuple[float, CheckReason]:
    """When the next check is due, and why; never sooner than ``min_interval_s`` after the last."""
    reason: CheckReason
    passers_by = all(d.kind == "new" and not d.stationary for d in wakers)
    if job.status is WatchStatus.BACKOFF:
        due, reason = now, "retry"
    elif job.next_run_at is None:
        due, reason = now, "first"
    elif job.confirming:
        due, reason = now, "confirm"
    elif wakers:
        due, reason = now, "wake"
        if not job.zones and job.last_verdict_at is not None and passers_by:
            # Without zones every passer-by anywhere in the image is new: a burst of them
            # wakes once per cooldown, as in Frigate, not once per passer-by. An object
            # that stopped, moved off, entered a zone or got a name is no passer-by: it is
            # looked at without delay.
            due = max(due, job.last_verdict_at + policy.unzoned_wake_cooldown_s)
    else:
        due, reason = job.next_run_at, "scheduled"
        if gated(job, policy) and job.last_verdict_at is not None:
            ceiling = job.last_verdict_at + policy.max_unchanged_s
            if ceiling <= due:
                due, reason = ceiling, "ceiling"
    if job.last_call_at is not None:
        due = max(due, job.last_call_at + policy.min_interval_s)
    return due, reason


def _seen_at(detections: Sequence[DetectionLike], now: float) -> float:
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


# -- what an action's outcome does to the job (shared by the runner and the benchmark) ----


def after_skip(job: WatchJob, skip: Skip, now: float) -> None:
    """Apply a skipped check: the verdict stands, the next check is scheduled."""
    gate, reading = job.gate, job.gate.reading
    if skip.reason == "unchanged" and reading is not None and gate.verified_at is not None:
        # The scene was the judged one when the first sample was taken: motion older
        # than that is accounted for.
        gate.verified_at = max(gate.verified_at, reading.first_at)
    gate.reading = None
    job.skipped_unchanged += 1
    job.next_run_at = now + (job.interval_s or FORMING_S)
    job.updated_at = now


def after_verdict(
    job: WatchJob,
    verdict: Verdict,
    *,
    frame: FrameLike,
    judged: Iterable[LiveLike],
    reference: Sequence[object],
    now: float,
    policy: WatchSettings,
) -> Literal["met", "confirm", "not_met"]:
    """Apply a verdict on ``frame``; returns what the runner must do next.

    ``met``: the job succeeded (alert now). ``confirm``: an unsure "met" (confidence
    below ``confirm_below``) waits for the next fresh frame to agree before it alerts; a
    second "met" confirms it whatever its confidence. ``not_met``: the objects in view
    (``judged``) and the scene's thumbnails (``reference``) become what later checks are
    compared with, and the next check is scheduled at the model's ``next_run_in``.
    """
    job.iterations += 1
    job.errors = 0
    job.last_error = None
    job.retry_at = None
    job.last_verdict_at = now
    job.last_checked_seq = frame.seq
    job.last_reasoning = verdict.reasoning
    unsure = verdict.confidence is not None and verdict.confidence < policy.confirm_below
    if verdict.condition_met and unsure and not job.confirming:
        job.confirming = True
        job.weak_at = now
        job.next_run_at = now
        job.transition(WatchEvent.WEAK_MET, now)
        return "confirm"
    if verdict.condition_met:
        job.notification_message = verdict.notification_message or verdict.reasoning
        job.transition(WatchEvent.MET, now)
        return "met"
    job.confirming = False
    job.weak_at = None
    job.interval_s = float(verdict.next_run_in)
    job.next_run_at = now + verdict.next_run_in
    job.memory.judge(judged, now)
    job.gate.reference = tuple(reference)
    job.gate.verified_at = frame.received_at
    job.transition(WatchEvent.NOT_MET, now)
    return "not_met"

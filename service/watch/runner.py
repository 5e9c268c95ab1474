"""One watch's task: ask :func:`~service.watch.machine.decide`, then wait, fetch or check.

The runner does the I/O for one job and nothing else; persisting, publishing and
alerting belong to its host (the engine, :mod:`service.watch.engine`). Rules it keeps:

* It never calls the model without a frame, and never twice on the same frame.
* After every await it looks at the job's status again: a watch cancelled while its
  model call was in flight drops the answer, so it can never notify. (The engine also
  cancels the task, which aborts the HTTP call.)
* A failed call (provider error, unreadable answer, undecodable frame) backs off and
  retries within the job's time; the error shows in the job's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from typing import Any, Protocol

import structlog

from service.frames import Frame, FrameError, FrameStore, fetch_latest_jpeg
from service.frigate import Detection, LiveObject
from service.llm import LlmError, TurnEnd
from service.settings import WatchSettings
from service.watch.machine import (
    Check,
    Expire,
    Stop,
    Wait,
    WaitFrame,
    WatchEvent,
    WatchJob,
    WatchStatus,
    backoff_delay,
    decide,
    wakes,
)
from service.watch.vlm import (
    RESPONSE_FORMAT,
    SeenObject,
    Verdict,
    VerdictError,
    build_messages,
    frame_text,
    parse_verdict,
    system_prompt,
    user_message,
)

log = structlog.get_logger(__name__)

HTTP_FALLBACK_AFTER_S = 2.0
"""With Frigate's API configured, a due check waits this long for a new MQTT frame first."""
FETCH_RETRY_S = 10.0
"""After a failed fetch from Frigate's API, wait this long for an MQTT frame, then retry."""
MAX_PENDING = 64
MIN_CALL_S = 0.5


class Clock(Protocol):
    """Wall time for the watch engine; tests inject a faster one."""

    def now(self) -> float:
        """Unix seconds."""

    def seconds_until(self, when: float) -> float:
        """Real seconds to wait until the clock reads ``when`` (0 if passed)."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def seconds_until(self, when: float) -> float:
        """``when - now``, at least 0."""
        return max(0.0, when - time.time())


class VisionModel(Protocol):
    """What a watch needs of a provider (``service.llm.roles.Provider`` fits)."""

    async def complete(  # noqa: D102
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        enable_thinking: bool | None = None,
        deadline_s: float | None = None,
    ) -> TurnEnd: ...


class RunnerHost(Protocol):
    """What a runner asks of the engine."""

    clock: Clock
    policy: WatchSettings
    frames: FrameStore
    frigate_url: str | None
    frigate_timeout_s: float
    tz: dt.tzinfo

    def vision(self) -> VisionModel:
        """The provider for watch calls (raises LlmError when there is none)."""

    def live_objects(self, camera: str) -> list[LiveObject]:
        """What the detector tracks on ``camera`` now."""

    def camera_name(self, camera: str) -> str:
        """A friendly name for the prompt."""

    async def sync(self, job: WatchJob) -> None:
        """Persist the job and publish its retained state."""

    async def alert(self, job: WatchJob, frame: Frame | None) -> None:
        """Publish the alert of a finished job (and the deciding frame)."""


class JobRunner:
    """Drives one job until it finishes or its task is cancelled."""

    def __init__(self, job: WatchJob, host: RunnerHost) -> None:
        self.job = job
        self.host = host
        self.wake = asyncio.Event()
        self.pending: deque[Detection] = deque(maxlen=MAX_PENDING)
        self.history: deque[tuple[dict[str, Any], dict[str, Any]]] = deque(
            maxlen=host.policy.max_history
        )
        self.task: asyncio.Task[None] | None = None
        self._system = system_prompt(job.condition, job.labels, job.zones)

    # -- called from outside -------------------------------------------------------

    def on_detection(self, detection: Detection) -> None:
        """Queue a detection that should bring the next check forward (sync, cheap)."""
        if self.job.active and wakes(self.job, detection):
            self.pending.append(detection)
            self.wake.set()

    def stop(self) -> None:
        """Cancel the task (the job's status was already set by the caller)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Run the job to its end; the caller's task boundary handles exceptions."""
        job, host = self.job, self.host
        if job.status is WatchStatus.PENDING:
            job.transition(WatchEvent.START, host.clock.now())
            await host.sync(job)
        while job.active:
            # Cleared before deciding, so a detection arriving from here on is not lost.
            self.wake.clear()
            now = host.clock.now()
            if job.status is WatchStatus.BACKOFF and (job.retry_at or 0) <= now:
                job.transition(WatchEvent.RETRY, now)
            frame = host.frames.latest(job.camera)
            action = decide(job, frame, self.pending, now, host.policy)
            if isinstance(action, Stop):
                return
            if isinstance(action, Expire):
                await self._expire()
                return
            if job.status is WatchStatus.WAITING_FOR_FRAME and not (
                isinstance(action, WaitFrame) and action.reason != "same_frame"
            ):
                job.transition(WatchEvent.FRAME_FOUND, now)
                await host.sync(job)
            if isinstance(action, Wait):
                await self._sleep(action.until)
            elif isinstance(action, WaitFrame):
                await self._wait_frame(action)
            elif isinstance(action, Check) and frame is not None:
                await self._check(frame, action)

    async def _sleep(self, until: float) -> None:
        try:
            async with asyncio.timeout(self.host.clock.seconds_until(until)):
                await self.wake.wait()
        except TimeoutError:
            pass

    async def _wait_frame(self, action: WaitFrame) -> None:
        job, host = self.job, self.host
        until = action.until
        if action.reason == "same_frame":
            # A camera that stops sending must not leave the job looking healthy:
            # after max_frame_age_s the frame is stale and the status says so.
            until = min(until, host.clock.now() + host.policy.max_frame_age_s)
            if host.frigate_url:
                until = min(until, host.clock.now() + HTTP_FALLBACK_AFTER_S)
        else:
            if job.status is WatchStatus.RUNNING:
                job.transition(WatchEvent.FRAME_LOST, host.clock.now())
                log.info("watch_waiting_for_frame", reason=action.reason)
                await host.sync(job)
            if host.frigate_url and await self._fetch():
                return
            if host.frigate_url:
                until = min(until, host.clock.now() + FETCH_RETRY_S)
        patience = host.clock.seconds_until(until)
        if await host.frames.wait_next(job.camera, action.after_seq, patience) is not None:
            return
        if action.reason == "same_frame" and host.frigate_url:
            await self._fetch()

    async def _fetch(self) -> bool:
        """A frame from Frigate's API into the shared store; ``False`` when it failed."""
        host, camera = self.host, self.job.camera
        assert host.frigate_url is not None  # noqa: S101 - callers check
        try:
            jpeg = await fetch_latest_jpeg(host.frigate_url, camera, host.frigate_timeout_s)
        except FrameError as exc:
            log.warning("watch_frame_fetch_failed", camera=camera, reason=exc.reason)
            return False
        return host.frames.put(camera, jpeg, source="http") is not None

    async def _expire(self) -> None:
        job, host = self.job, self.host
        job.transition(WatchEvent.TIMEOUT, host.clock.now())
        minutes = job.max_duration_minutes
        unit = "minute" if minutes == 1 else "minutes"
        message = (
            f"Stopped watching {host.camera_name(job.camera)} after {minutes} {unit}: "
            f"it did not see that {job.condition.strip()!r} happened."
        )
        if job.last_error:
            message += f" Last error: {job.last_error}"
        job.notification_message = message
        log.info("watch_timed_out", calls=job.model_calls, iterations=job.iterations)
        await host.alert(job, None)

    # -- one model call ------------------------------------------------------------

    async def _check(self, frame: Frame, action: Check) -> None:
        job, host = self.job, self.host
        now = host.clock.now()
        job.transition(WatchEvent.CHECK, now)
        job.model_calls += 1
        job.last_call_at = now
        if action.reason == "wake":
            job.wakeups += 1
        self.pending.clear()
        live = host.live_objects(job.camera)
        job.settled = frozenset(o.id for o in live if o.stationary)
        await host.sync(job)
        if job.status is not WatchStatus.CHECKING:
            return
        current: dict[str, Any] | None = None
        try:
            data_url = await host.frames.prepare_for_model(frame)
            taken = dt.datetime.fromtimestamp(frame.received_at, host.tz).strftime("%a %H:%M:%S")
            seen = [SeenObject(o.label, o.stationary, o.current_zones) for o in live]
            text = frame_text(host.camera_name(job.camera), taken, seen)
            current = user_message(text, data_url)
            remaining = host.clock.seconds_until(job.deadline)
            end = await host.vision().complete(
                build_messages(self._system, self.history, current),
                response_format=RESPONSE_FORMAT,
                enable_thinking=False,
                deadline_s=max(MIN_CALL_S, min(host.policy.vision_deadline_s, remaining)),
            )
            verdict = parse_verdict(end.content, end.reasoning)
        except (LlmError, VerdictError, FrameError) as exc:
            if job.status is WatchStatus.CHECKING:
                await self._failed_call(frame, exc)
            return
        if job.status is not WatchStatus.CHECKING:
            # Cancelled while the model was answering: the answer is dropped unseen.
            log.info("watch_answer_dropped", status=job.status.value)
            return
        self.history.append((current, {"role": "assistant", "content": verdict.to_json()}))
        await self._apply(verdict, frame)

    async def _apply(self, verdict: Verdict, frame: Frame) -> None:
        job, host = self.job, self.host
        now = host.clock.now()
        job.iterations += 1
        job.errors = 0
        job.last_error = None
        job.retry_at = None
        job.last_verdict_at = now
        job.last_checked_seq = frame.seq
        job.last_reasoning = verdict.reasoning
        log.info(
            "watch_verdict",
            met=verdict.condition_met,
            next_run_in=verdict.next_run_in,
            iteration=job.iterations,
            frame_seq=frame.seq,
        )
        if verdict.condition_met:
            job.notification_message = verdict.notification_message or verdict.reasoning
            # No await between the status check in _check and this transition: a cancel
            # cannot slip in between, and from here on the job is terminal.
            job.transition(WatchEvent.MET, now)
            await host.alert(job, frame)
            return
        job.next_run_at = now + verdict.next_run_in
        job.transition(WatchEvent.NOT_MET, now)
        await host.sync(job)

    async def _failed_call(self, frame: Frame, exc: Exception) -> None:
        job, host = self.job, self.host
        now = host.clock.now()
        job.errors += 1
        if isinstance(exc, LlmError):
            job.last_error = f"{exc.code.value}: {exc.message}"
        elif isinstance(exc, FrameError):
            # A frame that does not decode will not decode next time either.
            job.last_checked_seq = frame.seq
            job.last_error = f"frame_error: {exc}"
        else:
            job.last_error = f"bad_answer: {exc}"
        job.retry_at = now + backoff_delay(job.errors, host.policy)
        job.next_run_at = job.retry_at
        job.transition(WatchEvent.ERROR, now)
        log.warning("watch_call_failed", error=job.last_error, errors=job.errors)
        await host.sync(job)

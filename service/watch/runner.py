"""One watch's task: ask :func:`~service.watch.decide.decide`, then wait, compare, skip or check.

The runner does the I/O for one job and nothing else; persisting, publishing and
alerting belong to its host (the engine, :mod:`service.watch.engine`). Rules it keeps:

* It never calls the model without a frame, and never twice on the same frame.
* A check the model scheduled is skipped when the scene did not change (the change gate
  in :mod:`service.watch.decide`; samples and thumbnails in :mod:`service.watch.sampling`);
  a "met" the model is unsure of is confirmed on the next fresh frame before it alerts.
* After every await it looks at the job's status again: a watch cancelled while its
  model call was in flight drops the answer, so it can never notify. (The engine also
  cancels the task, which aborts the HTTP call.)
* A failed call (provider error, unreadable answer, undecodable frame) backs off and
  retries within the job's time; the error shows in the job's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from typing import Any

import structlog

from service.frames import Frame, FrameError, Thumbnail, fetch_latest
from service.frigate import Detection, LiveObject
from service.llm import LlmError, LlmErrorCode
from service.watch.decide import (
    Check,
    Compare,
    Expire,
    Skip,
    Stop,
    Wait,
    WaitFrame,
    after_skip,
    after_verdict,
    backoff_delay,
    decide,
)
from service.watch.host import RunnerHost
from service.watch.machine import WatchEvent, WatchJob, WatchStatus
from service.watch.sampling import Sampler
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
        self.sampler = Sampler(
            job.camera,
            host.frames,
            host.thumbnails,
            host.clock.seconds_until,
            self._fetch if host.frigate_url else None,
        )

    # -- called from outside -------------------------------------------------------

    def on_detection(self, detection: Detection) -> None:
        """Remember a detection; queue it when it is news to the watch (sync, cheap)."""
        job = self.job
        if not job.active or detection.camera != job.camera:
            return
        reason = job.memory.observe(
            detection, self.host.clock.now(), self.host.policy.max_unchanged_s
        )
        if reason is not None:
            log.debug(
                "watch_woken",
                reason=reason,
                object_id=detection.object_id,
                label=detection.label,
                zones=list(detection.zones),
            )
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
            motion = host.motion(job.camera)
            action = decide(job, frame, list(self.pending), now, host.policy, motion)
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
            elif isinstance(action, Compare) and frame is not None:
                await self._compare(frame)
            elif isinstance(action, Skip):
                await self._skip(action)
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
            latest = await fetch_latest(host.frigate_url, camera, host.frigate_timeout_s)
        except FrameError as exc:
            log.warning("watch_frame_fetch_failed", camera=camera, reason=exc.reason)
            return False
        # Frigate's preview of an offline camera is stored as such: never fresh enough.
        frame = host.frames.put(camera, latest.jpeg, source="http", offline=latest.offline)
        return frame is not None

    async def _expire(self) -> None:
        job, host = self.job, self.host
        job.transition(WatchEvent.TIMEOUT, host.clock.now())
        minutes = job.max_duration_minutes
        unit = "minute" if minutes == 1 else "minutes"
        message = (
            f"Stopped watching {host.camera_name(job.camera)} after {minutes} {unit}: "
            f"it did not see that {job.condition.strip()!r} happened."
        )
        if job.model_calls == 0:
            message += " It never got a frame of the camera to look at."
        if job.last_error:
            message += f" Last error: {job.last_error}"
        job.notification_message = message
        log.info("watch_timed_out", calls=job.model_calls, iterations=job.iterations)
        await host.alert(job, None)

    async def _cannot_see(self, exc: LlmError) -> None:
        """The model cannot take images: no retry can help, so the watch ends now."""
        job, host = self.job, self.host
        job.last_error = f"{exc.code.value}: {exc.message}"
        job.transition(WatchEvent.FAIL, host.clock.now())
        job.notification_message = (
            f"Stopped watching {host.camera_name(job.camera)}: the model cannot take images "
            f"({exc.message}). Give the vision role to a model that can see."
        )
        log.warning("watch_model_cannot_see", error=job.last_error)
        await host.alert(job, None)

    # -- the change gate ------------------------------------------------------------

    async def _compare(self, frame: Frame) -> None:
        """Sample the scene now and compare it with the judged one (into ``job.gate``)."""
        job, host = self.job, self.host
        samples = await self.sampler.burst(frame, host.clock.now(), self.wake)
        if self.pending:
            return  # a wake came in: that check needs no comparison
        reading = await self.sampler.reading(
            job.gate.reference, samples, host.policy.change_threshold
        )
        if job.active:
            job.gate.reading = reading

    async def _skip(self, action: Skip) -> None:
        """The scheduled check found nothing changed: no call, the next check scheduled."""
        job, host = self.job, self.host
        reading = job.gate.reading
        after_skip(job, action, host.clock.now())
        log.debug(
            "watch_check_skipped",
            reason=action.reason,
            score=None if reading is None else round(reading.score, 3),
            skipped=job.skipped_unchanged,
            next_in=job.interval_s,
        )
        await host.sync(job)

    # -- one model call ------------------------------------------------------------

    async def _check(self, frame: Frame, action: Check) -> None:
        job, host = self.job, self.host
        now = host.clock.now()
        job.transition(WatchEvent.CHECK, now)
        job.model_calls += 1
        job.last_call_at = now
        job.gate.reading = None
        if action.reason == "wake":
            job.wakeups += 1
        elif action.reason == "confirm":
            job.confirmations += 1
        log.debug("watch_check", reason=action.reason, frame_seq=frame.seq, calls=job.model_calls)
        self.pending.clear()
        live = host.live_objects(job.camera)
        await host.sync(job)
        if job.status is not WatchStatus.CHECKING:
            return
        collected = [frame]
        outcome: tuple[Verdict, dict[str, Any]] | Exception
        async with asyncio.TaskGroup() as tg:
            # The frames that arrive while the model looks become the reference of the
            # change gate; collecting them costs no time.
            follow = tg.create_task(self.sampler.follow(collected), name=f"watch-follow[{job.id}]")
            try:
                outcome = await self._ask(frame, live)
            except (LlmError, VerdictError, FrameError) as exc:
                outcome = exc
            finally:
                follow.cancel()
        if isinstance(outcome, Exception):
            if job.status is WatchStatus.CHECKING:
                await self._failed_call(frame, outcome)
            return
        reference = await self.sampler.thumbs(collected)
        if job.status is not WatchStatus.CHECKING:
            # Cancelled while the model was answering: the answer is dropped unseen.
            log.info("watch_answer_dropped", status=job.status.value)
            return
        verdict, current = outcome
        self.history.append((current, {"role": "assistant", "content": verdict.to_json()}))
        await self._apply(verdict, frame, live, reference)

    async def _ask(self, frame: Frame, live: list[LiveObject]) -> tuple[Verdict, dict[str, Any]]:
        """One model call on ``frame``: the verdict and the user message it answered."""
        job, host = self.job, self.host
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
        return parse_verdict(end.content, end.reasoning), current

    async def _apply(
        self, verdict: Verdict, frame: Frame, live: list[LiveObject], reference: list[Thumbnail]
    ) -> None:
        job, host = self.job, self.host
        confirming = job.confirming
        # No await between the status check in _check and these transitions: a cancel
        # cannot slip in between, and after "met" the job is terminal.
        step = after_verdict(
            job,
            verdict,
            frame=frame,
            judged=live,
            reference=reference,
            now=host.clock.now(),
            policy=host.policy,
        )
        log.info(
            "watch_verdict",
            met=verdict.condition_met,
            confidence=verdict.confidence,
            next_run_in=verdict.next_run_in,
            iteration=job.iterations,
            frame_seq=frame.seq,
            step=step,
        )
        if step == "met":
            await host.alert(job, frame)
            return
        if step == "confirm":
            log.debug("watch_confirming", confidence=verdict.confidence)
        elif confirming:
            log.debug("watch_not_confirmed", confidence=verdict.confidence)
        await host.sync(job)

    async def _failed_call(self, frame: Frame, exc: Exception) -> None:
        job, host = self.job, self.host
        now = host.clock.now()
        if isinstance(exc, LlmError) and exc.code is LlmErrorCode.NO_IMAGES:
            await self._cannot_see(exc)
            return
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

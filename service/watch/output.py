"""Where watches leave traces: the ``watches`` table and the watch topics.

For a watch ``<id>`` of user ``<user>``:

* ``<prefix>/<user>/watch/<id>`` (retained): the job's state after every change;
  cleared when the job leaves history (``watch.history_keep_s`` after it ended).
* ``<prefix>/<user>/watch/<id>/alert``: ``{job_id, camera, condition, message,
  reasoning, status, end_reason, time}``, once, whichever way the watch ends: the
  condition is met (``success``), it gives up (``failed``: timeout or error) or it is
  cancelled (``cancelled``).
* ``<prefix>/<user>/watch/<id>/snapshot``: the model-sized JPEG the model judged "met",
  published just before the alert (retained while the job is in history unless
  ``watch.snapshot_retain`` is off).
* ``frigate/camera_monitoring``: the success alert in Frigate's shape ``{camera,
  condition, message, reasoning, job_id}``, when ``frigate.camera_monitoring`` is on.

Every write here runs in a task of its own, shielded from the caller: cancelling a
watch (or stopping lookout) while its state is being saved never leaves a half-done
write behind, and a per-job lock keeps writes in order, so the store and the retained
state topic always end with the newest state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

import structlog

from service.frames import Frame, FrameError, FrameStore
from service.mqtt import Publisher, TopicMap
from service.settings import WatchSettings
from service.watch.machine import WatchJob
from service.watch.store import WatchStore, job_to_row

log = structlog.get_logger(__name__)

DRAIN_TIMEOUT_S = 2.0


class WatchOutput:
    """Persists watches and publishes their state, alerts and snapshots.

    Args:
        store: The ``watches`` table.
        publisher: The bus.
        topics: The topic map.
        frames: For the model-sized JPEG of the deciding frame.
        policy: The ``watch`` settings.
        camera_monitoring: Also publish success alerts on ``frigate/camera_monitoring``.
    """

    def __init__(
        self,
        store: WatchStore,
        publisher: Publisher,
        topics: TopicMap,
        frames: FrameStore,
        policy: WatchSettings,
        *,
        camera_monitoring: bool,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.topics = topics
        self.frames = frames
        self.policy = policy
        self.camera_monitoring = camera_monitoring
        self.alerts_sent = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def sync(self, job: WatchJob) -> None:
        """Save the job and publish its retained state, as of now, to completion."""
        row, state = job_to_row(job), _json(job.state())
        topic = self.topics.watch_state.format(user=job.user, job_id=job.id)
        lock = self._locks.setdefault(job.id, asyncio.Lock())

        async def write() -> None:
            async with lock:
                try:
                    await self.store.save(row)
                except Exception:
                    log.exception("watch_save_failed", job_id=job.id)
                await self.publish(topic, state, retain=True)

        await asyncio.shield(self.spawn(write(), f"watch-sync[{job.id}]"))

    async def alert(self, job: WatchJob, frame: Frame | None) -> None:
        """Save the finished job, then publish the deciding frame, the alert and Frigate's copy.

        ``alerted`` is saved only once the alert went out: a job found finished and not
        alerted at the next start gets its alert then (see :meth:`resend`).
        """
        await self.sync(job)
        await asyncio.shield(self.spawn(self._send_alert(job, frame), f"watch-alert[{job.id}]"))

    def resend(self, job: WatchJob) -> None:
        """Send the alert of a job that finished just before a crash (no snapshot)."""
        log.info("watch_alert_resent", job_id=job.id)
        self.spawn(self._send_alert(job, None), f"watch-alert[{job.id}]")

    async def purge(self, ended_before: float) -> int:
        """Delete jobs that ended before ``ended_before`` and clear their retained topics."""
        try:
            gone = await self.store.purge(ended_before)
        except Exception:
            log.exception("watch_purge_failed")
            return 0
        for user, job_id in gone:
            self._locks.pop(job_id, None)
            state = self.topics.watch_state.format(user=user, job_id=job_id)
            await self.publish(state, b"", retain=True)
            if self.policy.snapshot_retain:
                snapshot = self.topics.watch_snapshot.format(user=user, job_id=job_id)
                await self.publish(snapshot, b"", retain=True)
        if gone:
            log.info("watch_history_purged", count=len(gone))
        return len(gone)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1; a failure is logged, never raised (the watch goes on)."""
        try:
            await self.publisher.publish(topic, payload, qos=1, retain=retain)
        except Exception:
            log.exception("watch_publish_failed", topic=topic)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in a task of its own, which :meth:`drain` waits for."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Give writes in flight a moment to finish (at shutdown)."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)

    async def _send_alert(self, job: WatchJob, frame: Frame | None) -> None:
        t = self.topics
        if frame is not None:
            try:
                jpeg: bytes | None = await self.frames.jpeg_for_model(frame)
            except FrameError:
                jpeg = None
            if jpeg is not None:
                topic = t.watch_snapshot.format(user=job.user, job_id=job.id)
                await self.publish(topic, jpeg, retain=self.policy.snapshot_retain)
        body = {
            "job_id": job.id,
            "camera": job.camera,
            "condition": job.condition,
            "message": job.notification_message,
            "reasoning": job.last_reasoning,
            "status": job.status.value,
            "end_reason": job.end_reason,
            "time": job.ended_at,
        }
        await self.publish(t.watch_alert.format(user=job.user, job_id=job.id), _json(body))
        if job.end_reason == "condition_met" and self.camera_monitoring:
            frigate = {k: body[k] for k in ("camera", "condition", "message", "reasoning")}
            frigate["job_id"] = job.id
            await self.publish(t.frigate_camera_monitoring, _json(frigate))
        self.alerts_sent += 1
        log.info("watch_alert_sent", job_id=job.id, status=job.status.value)
        job.alerted = True
        await self.sync(job)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

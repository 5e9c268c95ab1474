"""The watch engine: many camera watches at once, durable, one task per watch.

:class:`WatchEngine` serves `<prefix>/<user>/watch` requests (``start``, ``cancel``,
``list``, ``get``) and the chat tools ``start_camera_watch``/``stop_camera_watch``. Each
running watch is a :class:`~service.watch.runner.JobRunner` task in the engine's own
task group (``run()``). A camera's frames come from the shared
:class:`~service.frames.latest.FrameStore` (the model-sized JPEG is prepared once per frame,
whatever the number of watches on the camera) and its detections from one subscription
to the Frigate mirror, fanned out to the watches of that camera. The topics a watch
publishes are described in :mod:`service.watch.output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.frames import Frame, FrameStore, Thumbnails
from service.frigate import Detection, FrigateMirror, LiveObject, MotionState
from service.llm import Providers
from service.mqtt import ErrorCode, Publisher, RequestError, TopicMap
from service.settings import Settings
from service.tools import Access, StartWatchArgs, access_for, local_zone
from service.watch.chat_tools import start_from_tool, stop_from_tool
from service.watch.host import Clock, ClusterHooks, SystemClock, VisionModel
from service.watch.machine import WatchEvent, WatchJob
from service.watch.output import WatchOutput
from service.watch.requests import (
    NO_FRAME_GRACE_S,
    WatchRequest,
    check_frames,
    check_limits,
    clean_labels,
    resolve_camera,
    resolve_zones,
    serve_request,
)
from service.watch.runner import JobRunner
from service.watch.store import WatchStore

__all__ = ["WatchEngine", "WatchRequest"]

if TYPE_CHECKING:
    from service.mqtt import RequestContext

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 10.0
LIST_LIMIT = 100


class WatchEngine:
    """Starts, runs, persists, resumes and publishes camera watches.

    Args:
        settings: The whole configuration (``watch``, ``frigate``, ``auth``, ``users``).
        topics: The topic map.
        engine: The store.
        frigate: The Frigate mirror (cameras, zones, live objects, detections).
        frames: The shared frame store.
        providers: The LLM providers (vision role, else chat).
        publisher: The bus.
        clock: Injected in tests.
    """

    def __init__(
        self,
        settings: Settings,
        topics: TopicMap,
        engine: AsyncEngine,
        frigate: FrigateMirror,
        frames: FrameStore,
        providers: Providers,
        publisher: Publisher,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.policy = settings.watch
        self.topics = topics
        self.store = WatchStore(engine)
        self.frigate = frigate
        self.frames = frames
        self.thumbnails = Thumbnails()
        self.providers = providers
        self.publisher = publisher
        self.clock: Clock = clock or SystemClock()
        self.frigate_url = settings.frigate.url
        self.frigate_timeout_s = settings.frigate.api_timeout_s
        self.tz = local_zone(settings.chat.timezone)
        self.output = WatchOutput(
            self.store,
            publisher,
            topics,
            frames,
            self.policy,
            camera_monitoring=settings.frigate.camera_monitoring,
        )
        self.no_frame_grace_s = NO_FRAME_GRACE_S
        self._live: dict[str, JobRunner] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        self._counts = {"started": 0, "cancelled": 0, "resumed": 0}
        self.cluster: ClusterHooks | None = None
        """Set in a cluster: ownership, takeovers and cancels across workers."""

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished watches, then run them and purge history until cancelled.

        Cancelling stops every watch task but leaves the watches unfinished in the
        store, so the next start resumes them.
        """
        unsubscribe = self.frigate.subscribe_detections(self._on_detection)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.cluster is None:
                    await self._resume()
                else:
                    # In a cluster only orphans are resumed: a live worker's watches stay its own.
                    await self.cluster.adopt(self)
                self._ready.set()
                interval = min(3600.0, max(10.0, self.policy.history_keep_s / 4))
                while True:
                    await self.output.purge(self.clock.now() - self.policy.history_keep_s)
                    # Housekeeping on a timer, not a poll: nothing signals "time passed".
                    await asyncio.sleep(self.clock.seconds_until(self.clock.now() + interval))
        finally:
            unsubscribe()
            self._ready.clear()
            self._tg = None
            await self.output.drain()

    def stats(self) -> dict[str, Any]:
        """For the health reply."""
        by_status: dict[str, int] = {}
        for runner in self._live.values():
            key = runner.job.status.value
            by_status[key] = by_status.get(key, 0) + 1
        return {
            "active": len(self._active()),
            "by_status": by_status,
            "alerts": self.output.alerts_sent,
            **self._counts,
        }

    # -- requests and tools ------------------------------------------------------------

    async def handle(self, request: WatchRequest, ctx: RequestContext) -> None:
        """Serve one `watch` request with one terminal reply."""
        await serve_request(self, access_for(self.settings, ctx.user), request, ctx)

    async def start_from_tool(self, args: StartWatchArgs, access: Access) -> dict[str, Any]:
        """`start_camera_watch` on behalf of the chatting user (raises ToolError)."""
        return await start_from_tool(self, args, access)

    async def stop_from_tool(self, job_id: str | None, access: Access) -> dict[str, Any]:
        """`stop_camera_watch`: the named watch, or the user's only running one (ToolError)."""
        return await stop_from_tool(self, self._active(), job_id, access)

    # -- the operations ------------------------------------------------------------------

    async def start(
        self,
        access: Access,
        camera: str,
        condition: str,
        max_duration_minutes: int,
        labels: list[str],
        zones: list[str],
        *,
        source: Literal["request", "chat"] = "request",
        request_id: str | None = None,
    ) -> WatchJob:
        """Validate, persist and launch a watch.

        Raises:
            RequestError: ``not_found`` (camera or zone), ``llm_unavailable`` (no model
                can see images), ``unavailable`` (no way to get a picture of the camera,
                see :func:`check_frames`; or the engine is not running),
                ``overloaded`` / ``rate_limited`` (the limits).
        """
        if request_id is not None:
            existing = await self.store.find_by_request(access.user, request_id)
            if existing is not None:
                # A replayed `start` (lookout died before replying) gets the same job.
                return self._live[existing.id].job if existing.id in self._live else existing
        camera_id = resolve_camera(self.frigate, self.frames, access, camera)
        zone_ids = resolve_zones(self.frigate, camera_id, zones)
        if self.providers.vision is None:
            raise RequestError(
                ErrorCode.LLM_UNAVAILABLE,
                "no LLM provider can look at images; give one the vision role",
            )
        warning = await check_frames(
            self.frames,
            self.frigate,
            self.topics,
            camera_id,
            frigate_url=self.frigate_url,
            grace_s=self.no_frame_grace_s,
        )
        check_limits(self._active(), access.user, self.policy)
        now = self.clock.now()
        job = WatchJob(
            id=uuid.uuid4().hex[:12],
            user=access.user,
            camera=camera_id,
            condition=condition.strip(),
            created_at=now,
            deadline=now + max_duration_minutes * 60,
            labels=clean_labels(labels),
            zones=zone_ids,
            max_duration_minutes=max_duration_minutes,
            source=source,
            request_id=request_id,
            updated_at=now,
            warning=warning,
        )
        runner = JobRunner(job, self)
        # Registered before the first await, so concurrent starts see it in the limits.
        self._live[job.id] = runner
        try:
            await self._wait_ready()
            await self.sync(job)
        except BaseException:
            self._live.pop(job.id, None)
            raise
        if self._tg is None:
            # Stopping between the check above and here: the stored job resumes at next start.
            self._live.pop(job.id, None)
        else:
            self._launch(runner)
        self._counts["started"] += 1
        log.info("watch_started", job_id=job.id, user=job.user, camera=job.camera, source=source)
        if warning:
            log.warning("watch_without_frames", job_id=job.id, camera=job.camera)
        return job

    async def cancel(self, access: Access, job_id: str) -> tuple[WatchJob, bool]:
        """Cancel a running watch; ``(job, False)`` when it had already finished.

        Raises:
            RequestError: ``not_found``, or ``forbidden`` for someone else's watch.
        """
        job = await self.get(access, job_id)
        runner = self._live.get(job_id)
        if runner is None and self.cluster is not None and job.can(WatchEvent.CANCEL):
            return await self.cluster.cancel_elsewhere(self, access, job)
        if runner is None or not job.can(WatchEvent.CANCEL):
            return job, False
        job.transition(WatchEvent.CANCEL, self.clock.now())
        runner.stop()
        self._counts["cancelled"] += 1
        log.info("watch_cancelled", job_id=job.id, by=access.user)
        by = "" if access.user == job.user else f" by {access.user}"
        job.notification_message = (
            f"Stopped watching {self.camera_name(job.camera)} for "
            f"{job.condition.strip()!r}: cancelled{by}."
        )
        # Every way a watch ends has an alert, so whoever waits on it (an automation, a
        # blueprint) learns of a cancel too, not only of success, time-out and failure.
        await self.alert(job, None)
        return job, True

    async def get(self, access: Access, job_id: str) -> WatchJob:
        """A watch the caller may see.

        Raises:
            RequestError: ``not_found``, or ``forbidden`` for someone else's watch.
        """
        runner = self._live.get(job_id)
        job = runner.job if runner is not None else await self.store.get(job_id)
        if job is None:
            raise RequestError(ErrorCode.NOT_FOUND, f"no watch {job_id!r}")
        if not access.owns(job.user):
            raise RequestError(ErrorCode.FORBIDDEN, f"watch {job_id!r} belongs to another user")
        return job

    async def list_jobs(self, access: Access) -> list[WatchJob]:
        """The caller's watches (an admin's: everyone's), newest first, history included."""
        stored = await self.store.list_jobs(None if access.is_admin else access.user, LIST_LIMIT)
        return [self._live[j.id].job if j.id in self._live else j for j in stored]

    # -- what runners ask of the engine ------------------------------------------------

    def vision(self) -> VisionModel:
        """The provider with the vision role (else chat); raises LlmError without one."""
        return self.providers.require_vision()

    def live_objects(self, camera: str) -> list[LiveObject]:
        """What Frigate tracks on ``camera``."""
        return self.frigate.live_objects(camera)

    def motion(self, camera: str) -> MotionState | None:
        """Frigate's motion state of ``camera`` (``None``: Frigate never said)."""
        return self.frigate.motion(camera)

    def camera_name(self, camera: str) -> str:
        """The camera's friendly name, else its id."""
        info = self.frigate.camera(camera)
        return info.friendly_name if info is not None else camera

    async def sync(self, job: WatchJob) -> None:
        """Persist the job and publish its retained state (see :class:`WatchOutput`)."""
        await self.output.sync(job)

    async def alert(self, job: WatchJob, frame: Frame | None) -> None:
        """Persist the finished job and publish its alert (see :class:`WatchOutput`)."""
        await self.output.alert(job, frame)

    # -- internals -----------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._ready.wait()
        except TimeoutError:
            raise RequestError(ErrorCode.UNAVAILABLE, "the watch engine is not running") from None

    def _launch(self, runner: JobRunner) -> None:
        assert self._tg is not None  # noqa: S101 - callers check
        job = runner.job
        runner.task = self._tg.create_task(self._guard(runner), name=f"watch[{job.id}]")

    async def _guard(self, runner: JobRunner) -> None:
        """The task boundary: a bug ends this watch (with a `failed` alert), not the engine."""
        job = runner.job
        try:
            with structlog.contextvars.bound_contextvars(watch_id=job.id, camera=job.camera):
                await runner.run()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("watch_crashed", job_id=job.id)
            if job.can(WatchEvent.FAIL):
                job.transition(WatchEvent.FAIL, self.clock.now())
                job.last_error = "internal error; lookout's log has the details"
                job.notification_message = (
                    f"Stopped watching {self.camera_name(job.camera)} because of an internal error."
                )
                with contextlib.suppress(Exception):
                    await self.alert(job, None)
        finally:
            if self._live.get(job.id) is runner:
                del self._live[job.id]

    def _on_detection(self, detection: Detection) -> None:
        for runner in list(self._live.values()):
            if runner.job.camera == detection.camera:
                runner.on_detection(detection)

    def live_ids(self) -> set[str]:
        """Ids of the watches this worker runs."""
        return set(self._live)

    def active_count(self) -> int:
        """Watches running on this worker."""
        return len(self._active())

    def _active(self) -> list[WatchJob]:
        return [r.job for r in self._live.values() if r.job.active]

    async def _resume(self) -> None:
        for job in await self.store.unalerted(self.clock.now()):
            self.output.resend(job)
        await self.resume(await self.store.unfinished())

    async def resume(self, jobs: list[WatchJob]) -> None:
        """Run stored watches again (at start, or taken over from a dead worker)."""
        if self._tg is None:
            return
        for job in jobs:
            job.transition(WatchEvent.RESUME, self.clock.now())
            # The model's history died with the process and the scene moved on while
            # lookout was away: look again at once, within the original deadline.
            job.next_run_at = None
            runner = JobRunner(job, self)
            self._live[job.id] = runner
            if not self._still_allowed(job):
                job.transition(WatchEvent.FAIL, self.clock.now())
                job.last_error = "the user may no longer see this camera"
                job.notification_message = f"Stopped watching {job.camera}: {job.last_error}."
                await self.alert(job, None)
                del self._live[job.id]
                continue
            self._launch(runner)
            self._counts["resumed"] += 1
        if jobs:
            log.info("watches_resumed", count=len(jobs), total=self._counts["resumed"])

    def _still_allowed(self, job: WatchJob) -> bool:
        try:
            return access_for(self.settings, job.user).can_see(job.camera)
        except RequestError:
            return False

"""Watches in a cluster: each is owned by one live worker, and taken over when it dies.

The owner is the ``worker_id`` of the watch's row. A worker adopts the watches whose
owner is dead (its liveness lock gone, see :mod:`service.store.cluster`) with one
claiming ``UPDATE``, and resumes them with their original deadline, looking at once.
A graceful stop gives its watches up and tells the others, who adopt them at once.
A cancel that reaches a worker which does not run the watch is sent to its owner, or,
when the owner is dead, the watch is adopted here first and cancelled here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from service.mqtt import ClusterControl
from service.store import orphaned
from service.tools import Access, access_for
from service.watch.machine import WatchJob
from service.watch.store import watches_table

if TYPE_CHECKING:
    from service.watch.engine import WatchEngine

log = structlog.get_logger(__name__)

CANCEL_TRIES = 3


class ClusterWatches:
    """What the watch engine does differently in a cluster.

    Args:
        control: Calls to other workers (the owner of a watch to cancel).
    """

    def __init__(self, control: ClusterControl) -> None:
        self.control = control
        self.orphaned = orphaned(watches_table.c.worker_id)
        self.engine: WatchEngine | None = None
        self.adopted = 0

    def bind(self, engine: WatchEngine) -> None:
        """Attach to the engine: its store saves as this worker, it serves cancels."""
        self.engine = engine
        engine.store.worker_id = self.control.lease.worker_id
        engine.cluster = self
        self.control.on("watch_cancel", self._cancel_here)

    async def adopt(self, engine: WatchEngine) -> int:
        """Take over what dead workers left: unfinished watches (up to the limit), alerts."""
        for job in await engine.store.claim_unalerted(self.orphaned):
            engine.output.resend(job)
        room = engine.policy.max_active - engine.active_count()
        if room <= 0:
            return 0
        jobs = await engine.store.claim(self.orphaned, room)
        if jobs:
            log.info("watches_adopted", count=len(jobs), jobs=[j.id for j in jobs])
            self.adopted += len(jobs)
            await engine.resume(jobs)
        return len(jobs)

    async def cancel_elsewhere(
        self, engine: WatchEngine, access: Access, job: WatchJob
    ) -> tuple[WatchJob, bool]:
        """Cancel a watch this worker does not run: on its owner, else adopt and cancel."""
        me = self.control.lease.worker_id
        for _ in range(CANCEL_TRIES):
            owners = await engine.store.owners()
            if job.id not in owners:
                break  # it ended meanwhile
            owner = owners[job.id]
            if owner is not None and owner != me:
                args = {"job_id": job.id, "by": access.user}
                result = await self.control.call(owner, "watch_cancel", args)
                if result is not None and "cancelled" in result:
                    stored = await engine.store.get(job.id)
                    return stored or job, bool(result["cancelled"])
            adopted = await engine.store.claim(self.orphaned, 1, job.id)
            if adopted:
                await engine.resume(adopted)
                if job.id in engine.live_ids():
                    return await engine.cancel(access, job.id)
        stored = await engine.store.get(job.id)
        return stored or job, False

    async def _cancel_here(self, args: dict[str, Any]) -> dict[str, Any]:
        engine = self.engine
        job_id = str(args.get("job_id"))
        if engine is None or job_id not in engine.live_ids():
            return {"error": "not_running"}
        access = access_for(engine.settings, str(args.get("by")))
        _job, cancelled = await engine.cancel(access, job_id)
        return {"cancelled": cancelled}

"""The chat tools' way into the watch engine: `start_camera_watch` and `stop_camera_watch`.

They do what a `watch` request does, for the chatting user, and turn its refusals into
tool errors the model can read (and pass on: a warning or an error says what to do).
"""

from __future__ import annotations

from typing import Any

from service.mqtt import ErrorCode, RequestError
from service.tools import Access, StartWatchArgs, ToolError
from service.watch.machine import WatchJob, iso
from service.watch.requests import MAX_DURATION_MINUTES, WatchOperations


async def start_from_tool(
    ops: WatchOperations, args: StartWatchArgs, access: Access
) -> dict[str, Any]:
    """`start_camera_watch` on behalf of the chatting user.

    Raises:
        ToolError: Everything the engine's ``start`` refuses, with its code.
    """
    if not 1 <= args.max_duration_minutes <= MAX_DURATION_MINUTES:
        raise ToolError(f"max_duration_minutes must be between 1 and {MAX_DURATION_MINUTES}")
    try:
        job = await ops.start(
            access,
            args.camera,
            args.condition,
            args.max_duration_minutes,
            args.labels or [],
            args.zones or [],
            source="chat",
        )
    except RequestError as exc:
        raise ToolError(exc.message, exc.code, **exc.details) from None
    return {
        "job_id": job.id,
        "camera": job.camera,
        "condition": job.condition,
        "labels": list(job.labels),
        "zones": list(job.zones),
        "status": job.status.value,
        "ends_at": iso(job.deadline),
        "note": "The user gets an alert when the condition is met, or when the watch "
        f"ends after {job.max_duration_minutes} minutes without it.",
    } | ({"warning": job.warning} if job.warning else {})


async def stop_from_tool(
    ops: WatchOperations, active: list[WatchJob], job_id: str | None, access: Access
) -> dict[str, Any]:
    """`stop_camera_watch`: the named watch, or the user's only running one of ``active``.

    Raises:
        ToolError: No such watch, not the caller's, or several running and none named.
    """
    if job_id is None:
        mine = [j for j in active if j.user == access.user]
        if not mine:
            raise ToolError("you have no running camera watch", ErrorCode.NOT_FOUND)
        if len(mine) > 1:
            running = [{"job_id": j.id, "camera": j.camera, "condition": j.condition} for j in mine]
            raise ToolError(
                f"you have {len(mine)} running watches; say which job_id to stop",
                running=running,
            )
        job_id = mine[0].id
    try:
        job, cancelled = await ops.cancel(access, job_id)
    except RequestError as exc:
        raise ToolError(exc.message, exc.code, **exc.details) from None
    return {"job_id": job.id, "cancelled": cancelled, "status": job.status.value}

"""The `watch` request payload, and how its camera, zones and labels are checked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import Field, model_validator

from service.frames import FrameStore
from service.frigate import FrigateMirror
from service.mqtt import ErrorCode, Request, RequestError, TopicMap
from service.settings import NAME_RE, WatchSettings, is_zone_name
from service.tools import Access
from service.watch.machine import WatchJob

if TYPE_CHECKING:
    from service.mqtt import RequestContext

MAX_DURATION_MINUTES = 1440
NO_FRAME_GRACE_S = 2.0
"""How long a start waits for a first frame of a camera that has none (a publisher that
started together with lookout, a replayed request) before it says there is none."""


class WatchRequest(Request):
    """`<prefix>/<user>/watch`: ``start``, ``cancel``, ``list`` or ``get``."""

    action: Literal["start", "cancel", "list", "get"]
    camera: str | None = Field(None, min_length=1, max_length=64)
    condition: str | None = Field(None, min_length=1, max_length=1000)
    max_duration_minutes: int = Field(60, ge=1, le=MAX_DURATION_MINUTES)
    labels: list[str] = Field(default_factory=list, max_length=20)
    zones: list[str] = Field(default_factory=list, max_length=20)
    job_id: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _fields_for_action(self) -> WatchRequest:
        if self.action == "start" and not (self.camera and (self.condition or "").strip()):
            raise ValueError("start needs 'camera' and 'condition'")
        if self.action in ("cancel", "get") and not self.job_id:
            raise ValueError(f"{self.action} needs 'job_id'")
        return self


class WatchOperations(Protocol):
    """What a `watch` request asks of the engine."""

    async def start(  # noqa: D102
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
    ) -> WatchJob: ...
    async def cancel(self, access: Access, job_id: str) -> tuple[WatchJob, bool]: ...  # noqa: D102
    async def get(self, access: Access, job_id: str) -> WatchJob: ...  # noqa: D102
    async def list_jobs(self, access: Access) -> list[WatchJob]: ...  # noqa: D102


async def serve_request(
    ops: WatchOperations, access: Access, request: WatchRequest, ctx: RequestContext
) -> None:
    """One terminal reply per request: ``done`` with the job(s), or a raised RequestError."""
    if request.action == "start":
        assert request.camera is not None  # noqa: S101 - the model validator
        assert request.condition is not None  # noqa: S101
        job = await ops.start(
            access,
            request.camera,
            request.condition,
            request.max_duration_minutes,
            request.labels,
            request.zones,
            request_id=ctx.request_id,
        )
        await ctx.reply.done({"job_id": job.id, "job": job.state()})
    elif request.action == "cancel":
        assert request.job_id is not None  # noqa: S101
        job, cancelled = await ops.cancel(access, request.job_id)
        body = {"job_id": job.id, "cancelled": cancelled, "status": job.status.value}
        await ctx.reply.done(body | {"job": job.state()})
    elif request.action == "get":
        assert request.job_id is not None  # noqa: S101
        job = await ops.get(access, request.job_id)
        await ctx.reply.done({"job_id": job.id, "job": job.state()})
    else:
        jobs = await ops.list_jobs(access)
        await ctx.reply.done({"count": len(jobs), "jobs": [j.state() for j in jobs]})


def resolve_camera(frigate: FrigateMirror, frames: FrameStore, access: Access, name: str) -> str:
    """The id of a camera the caller may see, from its id or friendly name.

    A camera known only from its frames (``lookout grab``) counts. One the caller may not
    see is reported like one that does not exist.

    Raises:
        RequestError: ``not_found``, listing the cameras the caller may use.
    """
    name = name.strip()
    camera = frigate.resolve_camera(name)
    if camera is None and NAME_RE.fullmatch(name) and name in frames.cameras():
        camera = name
    if camera is None or not access.can_see(camera):
        known = {c.id for c in frigate.cameras()} | set(frames.cameras())
        raise RequestError(
            ErrorCode.NOT_FOUND,
            f"camera {name!r} not found",
            available_cameras=sorted(c for c in known if access.can_see(c)),
        )
    return camera


def resolve_zones(frigate: FrigateMirror, camera: str, zones: list[str]) -> tuple[str, ...]:
    """Zone ids of ``camera`` from ids or friendly names.

    While lookout knows no zone of the camera yet (nothing heard from Frigate), a valid
    id is taken on trust; once it knows some, an unknown name is an error.

    Raises:
        RequestError: ``not_found``, listing the camera's zones.
    """
    info = frigate.camera(camera)
    known = [z.id for z in info.zones] if info is not None else []
    out: list[str] = []
    for name in (z.strip() for z in zones if z.strip()):
        found = frigate.resolve_zone(name, [camera])
        if found:
            out += found
        elif not known and is_zone_name(name):
            out.append(name)
        else:
            raise RequestError(
                ErrorCode.NOT_FOUND,
                f"camera {camera!r} has no zone {name!r}",
                available_zones=known,
            )
    return tuple(dict.fromkeys(out))


def clean_labels(labels: list[str]) -> tuple[str, ...]:
    """Labels lower-cased, trimmed, without blanks or repeats (Frigate's labels are lower case)."""
    return tuple(dict.fromkeys(x.strip().lower() for x in labels if x.strip()))


def check_limits(active: list[WatchJob], user: str, policy: WatchSettings) -> None:
    """Refuse one more watch beyond ``max_active`` or ``max_active_per_user``.

    Raises:
        RequestError: ``overloaded`` (lookout's limit) or ``rate_limited`` (the user's).
    """
    if len(active) >= policy.max_active:
        raise RequestError(
            ErrorCode.OVERLOADED,
            f"lookout is running {len(active)} watches, its limit (watch.max_active); "
            "try again when one has finished",
        )
    mine = [j.id for j in active if j.user == user]
    if len(mine) >= policy.max_active_per_user:
        raise RequestError(
            ErrorCode.RATE_LIMITED,
            f"you have {len(mine)} running watches, the limit per user "
            "(watch.max_active_per_user); cancel one first",
            running=mine,
        )


async def check_frames(
    frames: FrameStore,
    frigate: FrigateMirror,
    topics: TopicMap,
    camera: str,
    *,
    frigate_url: str | None,
    grace_s: float = NO_FRAME_GRACE_S,
) -> str | None:
    """Whether lookout can get pictures of ``camera``, before a watch on it starts.

    With ``frigate.url`` lookout fetches Frigate's ``latest.jpg``; a frame on the frame
    topic means a publisher (``lookout grab``, a Home Assistant camera...) feeds it.
    Without either, Frigate's own cropped snapshots are all that can come, and only for a
    camera Frigate reports: then the watch starts with a warning that says so; for a
    camera nothing reports, it cannot see anything, ever, and does not start.

    Returns:
        ``None`` when whole frames can come; else the warning.

    Raises:
        RequestError: ``unavailable``, saying how to give lookout frames.
    """
    if frigate_url or frames.latest(camera, allow_snapshot=False) is not None:
        return None
    frame = await frames.wait_next(camera, 0, grace_s)
    if frame is not None and frame.source != "snapshot":
        return None
    topic = topics.frame.format(camera=camera)
    how = (
        "set frigate.url (lookout then fetches Frigate's latest.jpg), run "
        f"`lookout grab SOURCE --camera {camera}`, or publish JPEG frames to {topic}"
    )
    info = frigate.camera(camera)
    if frame is None and (info is None or info.last_seen is None):
        raise RequestError(
            ErrorCode.UNAVAILABLE,
            f"lookout has no picture of camera {camera!r} and no way to get one: {how}",
            frame_topic=topic,
        )
    return (
        f"lookout has no whole frame of camera {camera!r}: the watch can only look at the "
        f"cropped snapshots Frigate publishes when it detects something. To watch the whole "
        f"scene, {how}."
    )

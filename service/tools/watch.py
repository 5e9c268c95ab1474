"""`start_camera_watch` and `stop_camera_watch`: hand-overs to the watch engine."""

from __future__ import annotations

from pydantic import Field

from service.mqtt import ErrorCode
from service.tools.registry import Tool, ToolArgs, ToolContext, ToolError, ToolResult


class StartWatchArgs(ToolArgs):
    """Arguments of `start_camera_watch`."""

    camera: str = Field(description="Camera id to watch.")
    condition: str = Field(
        description="What to wait for, in plain words, e.g. 'a person is at the front door'."
    )
    max_duration_minutes: int = Field(60, description="Give up after this many minutes (1-1440).")
    labels: list[str] | None = Field(
        None, description="Object classes whose detection triggers a look, e.g. ['person']."
    )
    zones: list[str] | None = Field(None, description="Only detections in these zones trigger.")


class StopWatchArgs(ToolArgs):
    """Arguments of `stop_camera_watch`."""

    job_id: str | None = Field(
        None, description="The watch to stop; leave out to stop your only running watch."
    )


async def start_camera_watch(args: StartWatchArgs, ctx: ToolContext) -> ToolResult:
    """Start a watch through the engine."""
    engine = getattr(ctx.deps, "watches", None)
    if engine is None:
        raise ToolError("camera watches are not available in this lookout", ErrorCode.UNAVAILABLE)
    return ToolResult(await engine.start_from_tool(args, ctx.access))


async def stop_camera_watch(args: StopWatchArgs, ctx: ToolContext) -> ToolResult:
    """Stop a watch through the engine."""
    engine = getattr(ctx.deps, "watches", None)
    if engine is None:
        raise ToolError("camera watches are not available in this lookout", ErrorCode.UNAVAILABLE)
    return ToolResult(await engine.stop_from_tool(args.job_id, ctx.access))


TOOLS = [
    Tool(
        "start_camera_watch",
        "Watch a camera and notify the user when something happens: 'tell me when the "
        "package is picked up', 'let me know when a car parks in the driveway'. A vision "
        "model checks the live image when detections happen until the condition is met or "
        "the time runs out. Returns the watch's job id.",
        StartWatchArgs,
        start_camera_watch,
    ),
    Tool(
        "stop_camera_watch",
        "Stop one of the user's running camera watches.",
        StopWatchArgs,
        stop_camera_watch,
    ),
]

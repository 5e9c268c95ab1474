"""The `tool` request (run one tool directly) and the registry of every tool."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.mqtt import ErrorCode, Request, RequestContext, RequestError
from service.settings import Settings
from service.tools.auth import access_for
from service.tools.camera import TOOLS as CAMERA_TOOLS
from service.tools.history import TOOLS as HISTORY_TOOLS
from service.tools.registry import Tool, ToolContext, ToolRegistry
from service.tools.watch import TOOLS as WATCH_TOOLS


def build_registry(settings: Settings) -> ToolRegistry:
    """Every tool, in the order the model is offered them."""
    ordered: list[Tool] = [
        HISTORY_TOOLS[0],  # search_objects
        *CAMERA_TOOLS,  # get_live_context, get_camera_state, set_camera_state
        *WATCH_TOOLS,  # start_camera_watch, stop_camera_watch
        *HISTORY_TOOLS[1:],  # get_recap, get_profile_status
    ]
    return ToolRegistry(ordered, timeout_s=settings.chat.tool_timeout_s)


class ToolRequest(Request):
    """`<prefix>/<user>/tool`: run one tool with the caller's rights."""

    tool_name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolService:
    """Serves `tool` requests."""

    def __init__(self, settings: Settings, registry: ToolRegistry, deps: Any) -> None:
        self._settings = settings
        self._registry = registry
        self._deps = deps

    async def handle(self, request: ToolRequest, ctx: RequestContext) -> None:
        """Run the tool; a failing tool is an error reply carrying the tool's own message."""
        access = access_for(self._settings, ctx.user)
        tool_ctx = ToolContext(access=access, request_id=ctx.request_id, deps=self._deps)
        outcome = await self._registry.call(request.tool_name, request.arguments, tool_ctx)
        if outcome.ok:
            await ctx.reply.done({"tool_name": outcome.name, "result": outcome.result})
            return
        result = outcome.result if isinstance(outcome.result, dict) else {}
        message = str(result.get("error", "the tool failed"))
        details = {k: v for k, v in result.items() if k != "error"}
        raise RequestError(outcome.error_code or ErrorCode.INVALID_REQUEST, message, **details)

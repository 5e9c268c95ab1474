"""The tool registry: async functions with a pydantic arguments model.

A tool's failure is data for the model, never a crash: bad arguments, a
:class:`ToolError`, a timeout or an unexpected exception all become an
``{"error": ...}`` result the model can read and recover from.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from service.mqtt import ErrorCode
from service.tools.auth import Access

log = structlog.get_logger(__name__)


class ToolError(Exception):
    """A failure the model should read (``camera 'x' not found``), not a bug.

    ``code`` is what a client running the tool directly (the `tool` request) gets.
    """

    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra


class ToolArgs(BaseModel):
    """Base of every tool's arguments: unknown keys are ignored, as models invent some."""

    model_config = ConfigDict(extra="ignore")


@dataclass(slots=True)
class ToolResult:
    """What a tool returns: JSON-able data, and optionally a frame for a vision model."""

    data: Any
    image_url: str | None = None
    image_camera: str | None = None
    image_caption: str | None = None
    """What the image is, for the model (a crop? how old?)."""
    image_note: str | None = None
    """Why a wanted image is missing (the caller is told)."""


@dataclass(slots=True)
class ToolContext:
    """The caller and collaborators a tool may use."""

    access: Access
    request_id: str
    deps: Any
    """The runtime's dependency bundle (see ``service.tools.deps.ToolDeps``)."""


ToolFn = Callable[[Any, ToolContext], Awaitable[ToolResult]]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool the model may call."""

    name: str
    description: str
    args: type[ToolArgs]
    run: ToolFn
    direct: bool = True
    """Whether clients may run it through the `tool` request kind."""

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool definition."""
        params = self.args.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        params.setdefault("properties", {})
        params.setdefault("required", [])
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }


@dataclass(slots=True)
class ToolOutcome:
    """A finished tool call: what the model reads and what clients are shown."""

    name: str
    arguments: dict[str, Any]
    result: Any
    content: str
    ok: bool
    ms: float
    image_url: str | None = None
    image_camera: str | None = None
    image_caption: str | None = None
    image_note: str | None = None
    error_code: ErrorCode | None = None


class ToolRegistry:
    """Tools by name, in the order they are offered to the model."""

    def __init__(self, tools: list[Tool], timeout_s: float = 20.0) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._timeout_s = timeout_s
        self._schemas: list[dict[str, Any]] | None = None

    def names(self) -> list[str]:
        """Tool names in offer order."""
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        """A tool by name."""
        return self._tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool definition, OpenAI format (shared: callers must not modify them)."""
        # Built once: pydantic's JSON-schema generation costs ~2.6 ms for the tool set,
        # which every chat request paid (and 200 concurrent chats paid 200 times over).
        if self._schemas is None:
            self._schemas = [tool.schema() for tool in self._tools.values()]
        return list(self._schemas)

    async def call(
        self,
        name: str,
        arguments: dict[str, Any] | str | None,
        ctx: ToolContext,
        *,
        arguments_error: str | None = None,
    ) -> ToolOutcome:
        """Run one tool call; never raises (except for cancellation)."""
        started = time.perf_counter()
        args_dict: dict[str, Any] = {}
        try:
            args_dict = _as_dict(arguments, arguments_error)
            tool = self._tools.get(name)
            if tool is None:
                raise ToolError(
                    f"unknown tool {name!r}; available: {', '.join(self._tools)}",
                    ErrorCode.NOT_FOUND,
                )
            try:
                parsed = tool.args.model_validate(args_dict)
            except ValidationError as exc:
                raise ToolError("invalid arguments: " + _problems(exc)) from None
            async with asyncio.timeout(self._timeout_s):
                result = await tool.run(parsed, ctx)
            outcome = self._outcome(name, args_dict, result.data, True, started)
            outcome.image_url, outcome.image_camera = result.image_url, result.image_camera
            outcome.image_caption = result.image_caption
            outcome.image_note = result.image_note
        except ToolError as exc:
            data = {"error": exc.message, **exc.extra}
            outcome = self._outcome(name, args_dict, data, False, started, exc.code)
        except TimeoutError:
            message = f"the tool did not finish within {self._timeout_s:g} s"
            data = {"error": message}
            outcome = self._outcome(name, args_dict, data, False, started, ErrorCode.TIMEOUT)
        except Exception:
            log.exception("tool_failed", tool=name)
            data = {"error": f"internal error in {name}; lookout's log has the details"}
            outcome = self._outcome(name, args_dict, data, False, started, ErrorCode.INTERNAL)
        log.info("tool_called", tool=name, ok=outcome.ok, ms=outcome.ms)
        return outcome

    @staticmethod
    def _outcome(
        name: str,
        args: dict[str, Any],
        data: Any,
        ok: bool,
        started: float,
        code: ErrorCode | None = None,
    ) -> ToolOutcome:
        content = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        ms = round((time.perf_counter() - started) * 1000, 2)
        return ToolOutcome(name, args, data, content, ok, ms, error_code=code)


def _as_dict(arguments: dict[str, Any] | str | None, error: str | None) -> dict[str, Any]:
    if error:
        raise ToolError(f"the arguments were not valid JSON ({error}); send a JSON object")
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            raise ToolError(
                f"the arguments were not valid JSON ({exc}); send a JSON object"
            ) from None
    if not isinstance(arguments, dict):
        raise ToolError("the arguments must be a JSON object")
    # Small local models send "" or null for arguments they mean to leave out.
    return {k: v for k, v in arguments.items() if v is not None and v != ""}


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)

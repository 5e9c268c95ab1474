"""The tools a model (or a `tool` request) may call, and who may call them.

Each tool is an async function taking a pydantic arguments model; a failure is data for
the model, never a crash. :class:`ToolRegistry` holds them, :func:`build_registry` fills
it, :class:`ToolService` answers direct `tool` requests, and :mod:`service.tools.auth`
decides each caller's rights.
"""

from __future__ import annotations

from service.tools.auth import Access, access_for
from service.tools.deps import ToolDeps
from service.tools.registry import ToolContext, ToolError, ToolOutcome, ToolRegistry
from service.tools.request import ToolRequest, ToolService, build_registry
from service.tools.timeparse import local_zone, zone_name
from service.tools.watch import StartWatchArgs

__all__ = [
    "Access",
    "StartWatchArgs",
    "ToolContext",
    "ToolDeps",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "ToolRequest",
    "ToolService",
    "access_for",
    "build_registry",
    "local_zone",
    "zone_name",
]

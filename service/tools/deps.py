"""The collaborators tools reach through ``ToolContext.deps``, and shared tool helpers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from service.frames import FramePicker, FrameStore
from service.frigate import FrigateMirror
from service.llm import Providers
from service.mqtt import ErrorCode, Publisher, TopicMap
from service.settings import Settings
from service.store import EventStore
from service.tools.auth import Access
from service.tools.registry import ToolError
from service.tools.timeparse import TimeParseError, parse_time


@dataclass
class ToolDeps:
    """Everything a tool may use; built once by the composition root."""

    settings: Settings
    topics: TopicMap
    frigate: FrigateMirror
    events: EventStore
    frames: FrameStore
    publisher: Publisher
    providers: Providers
    tz: dt.tzinfo
    watches: Any | None = None
    """The watch engine, once it is wired in."""
    picker: FramePicker | None = None
    """Chooses a model's frame; built from the settings on first use when not given."""

    def frame_picker(self) -> FramePicker:
        """The frame picker (see :mod:`service.frames.pick`)."""
        if self.picker is None:
            f = self.settings.frigate
            self.picker = FramePicker(
                self.frames, f.url, timeout=f.api_timeout_s, cache_s=f.latest_cache_s
            )
        return self.picker


def resolve_visible_camera(deps: ToolDeps, access: Access, name: str) -> str:
    """A camera id the caller may see, from an id or friendly name.

    A camera the caller may not see is reported exactly like one that does not exist.

    Raises:
        ToolError: Unknown or not visible, listing the cameras the caller may use.
    """
    camera = deps.frigate.resolve_camera(name.strip())
    if camera is None and access.can_see(name.strip()) and name.strip() in deps.frames.cameras():
        camera = name.strip()
    if camera is None or not access.can_see(camera):
        raise ToolError(
            f"camera {name!r} not found",
            ErrorCode.NOT_FOUND,
            available_cameras=visible_cameras(deps, access),
        )
    return camera


def visible_cameras(deps: ToolDeps, access: Access) -> list[str]:
    """Ids of every known camera the caller may see."""
    known = {c.id for c in deps.frigate.cameras()} | set(deps.frames.cameras())
    return sorted(c for c in known if access.can_see(c))


def camera_filter(access: Access) -> list[str] | None:
    """The camera filter for history queries: ``None`` = any camera, else the allowed ones."""
    return None if access.cameras is None else sorted(access.cameras)


def parse_window(
    deps: ToolDeps, after: str | None, before: str | None
) -> tuple[float | None, float | None]:
    """Parse optional ``after``/``before`` times; a bad one is an error, never ignored."""
    out: list[float | None] = []
    for key, text in (("after", after), ("before", before)):
        if text is None or not text.strip():
            out.append(None)
            continue
        try:
            out.append(parse_time(text, deps.tz))
        except TimeParseError as exc:
            raise ToolError(f"{key}: {exc}") from None
    return out[0], out[1]

"""Tools over the stored history: `search_objects`, `get_recap`, `get_profile_status`."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from service.tools.deps import (
    ToolDeps,
    camera_filter,
    parse_window,
    resolve_visible_camera,
)
from service.tools.registry import Tool, ToolArgs, ToolContext, ToolError, ToolResult
from service.tools.timeparse import local_text

RECAP_LIMIT = 200


class SearchObjectsArgs(ToolArgs):
    """Arguments of `search_objects`."""

    camera: str | None = Field(None, description="Camera id (or name). Leave out for all cameras.")
    label: str | None = Field(
        None, description="Object class: person, car, dog, package, … Leave out with sub_label."
    )
    sub_label: str | None = Field(
        None,
        description="A recognised name: a person's name, a delivery company, a pet's name. "
        "Use it without label.",
    )
    after: str | None = Field(
        None, description="Only objects first seen after this local time, e.g. 2026-11-24T06:00:00."
    )
    before: str | None = Field(None, description="Only objects first seen before this local time.")
    zones: list[str] | None = Field(None, description="Zone ids or names; any of them matches.")
    limit: int = Field(25, description="How many objects at most (1-100), newest first.")


async def search_objects(args: SearchObjectsArgs, ctx: ToolContext) -> ToolResult:
    """Search the history of tracked objects."""
    deps: ToolDeps = ctx.deps
    cameras = camera_filter(ctx.access)
    if args.camera:
        cameras = [resolve_visible_camera(deps, ctx.access, args.camera)]
    after, before = parse_window(deps, args.after, args.before)
    zones = None
    if args.zones:
        zones = []
        for name in args.zones:
            zones.extend(deps.frigate.resolve_zone(name, cameras) or [name.strip()])
    limit = max(1, min(100, args.limit))
    rows = await deps.events.search(
        cameras=cameras,
        labels=[args.label.strip().lower()] if args.label else None,
        sub_labels=[args.sub_label.strip()] if args.sub_label else None,
        zones=zones,
        after=after,
        before=before,
        limit=limit,
    )
    events = [_event(row, deps) for row in rows]
    return ToolResult(
        {"count": len(events), "more_available": len(events) == limit, "objects": events}
    )


def _event(row: Any, deps: ToolDeps) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "camera": row.camera,
        "label": row.label,
        "start_local": local_text(row.start_time, deps.tz),
        "end_local": local_text(row.end_time, deps.tz) if row.end_time else "still in view",
        "zones": list(row.zones),
    }
    for key in ("sub_label", "face", "plate", "description"):
        value = getattr(row, key)
        if value:
            out[key] = value
    if row.top_score is not None:
        out["score"] = round(row.top_score, 2)
    if row.has_clip:
        out["has_clip"] = True
    if row.has_snapshot:
        out["has_snapshot"] = True
    return out


class RecapArgs(ToolArgs):
    """Arguments of `get_recap`."""

    after: str = Field(description="Start of the period, local time, e.g. 2026-11-24T08:00:00.")
    before: str = Field(description="End of the period, local time.")
    cameras: str = Field("all", description="'all' or a comma-separated list of camera ids.")
    severity: Literal["alert", "detection"] | None = Field(
        None, description="Only alerts (important) or only detections. Leave out for both."
    )


async def get_recap(args: RecapArgs, ctx: ToolContext) -> ToolResult:
    """Summarise what Frigate reviewed in a period."""
    deps: ToolDeps = ctx.deps
    after, before = parse_window(deps, args.after, args.before)
    if after is None or before is None:
        raise ToolError("after and before are both required")
    if before <= after:
        raise ToolError("before must be later than after")
    cameras = camera_filter(ctx.access)
    if args.cameras.strip().lower() not in ("", "all", "*"):
        cameras = [
            resolve_visible_camera(deps, ctx.access, c)
            for c in args.cameras.split(",")
            if c.strip()
        ]
    rows = await deps.events.reviews(
        after=after, before=before, cameras=cameras, severity=args.severity, limit=RECAP_LIMIT + 1
    )
    truncated = len(rows) > RECAP_LIMIT
    rows = rows[:RECAP_LIMIT]
    items = [_review(row, deps) for row in rows]
    counts = Counter(row.severity for row in rows)
    data: dict[str, Any] = {
        "period": {
            "from_local": local_text(after, deps.tz),
            "to_local": local_text(before, deps.tz),
        },
        "alerts": counts.get("alert", 0),
        "detections": counts.get("detection", 0),
        "items": items,
    }
    if truncated:
        data["truncated"] = (
            f"only the first {RECAP_LIMIT} items are listed; ask for a shorter period"
        )
    if not items:
        data["message"] = "Nothing was reviewed in this period."
    return ToolResult(data)


def _review(row: Any, deps: ToolDeps) -> dict[str, Any]:
    out: dict[str, Any] = {
        "camera": row.camera,
        "severity": row.severity,
        "start_local": local_text(row.start_time, deps.tz),
        "end_local": local_text(row.end_time, deps.tz) if row.end_time else "ongoing",
        "objects": list(row.objects),
    }
    for key in ("sub_labels", "zones", "audio"):
        if getattr(row, key):
            out[key] = list(getattr(row, key))
    if row.title:
        out["title"] = row.title
    if row.summary or row.short_summary:
        out["summary"] = row.summary or row.short_summary
    if row.threat_level is not None:
        out["threat_level"] = ["normal", "needs_review", "security_concern"][
            max(0, min(2, row.threat_level))
        ]
    return out


class NoArgs(ToolArgs):
    """No arguments."""


async def get_profile_status(_args: NoArgs, ctx: ToolContext) -> ToolResult:
    """Frigate's active profile and availability."""
    deps: ToolDeps = ctx.deps
    return ToolResult(
        {
            "active_profile": deps.frigate.profile() or "none",
            "frigate": deps.frigate.available() or "unknown",
        }
    )


TOOLS = [
    Tool(
        "search_objects",
        "Look up objects the cameras recorded in the past (people, cars, animals, packages) "
        "with their times, zones, recognised names, plates and descriptions. For 'did anyone "
        "come by', 'when was the last car', 'was Anna here yesterday'. Not for what is "
        "happening now (get_live_context) or for future alerts (start_camera_watch).",
        SearchObjectsArgs,
        search_objects,
    ),
    Tool(
        "get_recap",
        "Summarise the reviewed alerts and detections of a period, with Frigate's generated "
        "titles and summaries when it has them. For 'what happened while I was away' or "
        "'anything important overnight'. Summarise the items for the user.",
        RecapArgs,
        get_recap,
    ),
    Tool(
        "get_profile_status",
        "Which Frigate profile is active (e.g. home, away) and whether Frigate is online. "
        "Call it first for questions about the time the user was away.",
        NoArgs,
        get_profile_status,
    ),
]

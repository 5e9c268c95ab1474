"""Tools over the stored history: `search_objects`, `get_recap`, `get_profile_status`."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from service.store import END_REASONS, EventRow, ReviewRow
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
    data: dict[str, Any] = {
        "count": len(events),
        "more_available": len(events) == limit,
        "objects": events,
    }
    notes = await history_notes(deps, after)
    if notes:
        data["notes"] = notes
    return ToolResult(data)


async def history_notes(deps: ToolDeps, after: float | None) -> list[str]:
    """What an answer about the past should know about the history's own gaps."""
    importer = deps.frigate.importer
    if importer is not None:
        status = importer.status
        if status.state == "running":
            since = local_text(status.window_from, deps.tz) if status.window_from else "?"
            return [
                f"lookout is still importing Frigate's history (from {since}; "
                f"{status.events} events so far): older results may be missing"
            ]
        if status.state == "retrying":
            return [
                f"importing Frigate's history failed ({status.error}); lookout keeps trying, "
                "and results from before it started may be missing"
            ]
        return []
    bounds = await deps.events.bounds()
    if bounds.earliest_start is not None and (after is None or after < bounds.earliest_start):
        return [
            "lookout's history starts "
            f"{local_text(bounds.earliest_start, deps.tz)}, when it first heard from Frigate; "
            "set frigate.url to import Frigate's older history"
        ]
    return []


def _end(end_time: float | None, reason: str | None, deps: ToolDeps, open_text: str) -> Any:
    if end_time is None:
        return {"end_local": open_text}
    out = {"end_local": local_text(end_time, deps.tz)}
    if reason:
        out["end_note"] = END_REASONS.get(reason, reason)
    return out


def _event(row: EventRow, deps: ToolDeps) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "camera": row.camera,
        "label": row.label,
        "start_local": local_text(row.start_time, deps.tz),
        **_end(row.end_time, row.end_reason, deps, "still in view"),
        "zones": list(row.zones),
    }
    for key in ("sub_label", "plate", "description"):
        value = getattr(row, key)
        if value:
            out[key] = value
    if row.face and row.face != row.sub_label:
        out["face_guess"] = {
            "name": row.face,
            "score": None if row.face_score is None else round(row.face_score, 2),
        }
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
    notes = await history_notes(deps, after)
    if notes:
        data["notes"] = notes
    return ToolResult(data)


def _review(row: ReviewRow, deps: ToolDeps) -> dict[str, Any]:
    out: dict[str, Any] = {
        "camera": row.camera,
        "severity": row.severity,
        "start_local": local_text(row.start_time, deps.tz),
        **_end(row.end_time, row.end_reason, deps, "ongoing"),
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

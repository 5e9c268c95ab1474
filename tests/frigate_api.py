"""A stand-in for Frigate's HTTP API, serving what Frigate's own handlers serve.

Written from Frigate's source (``frigate/api/event.py``, ``review.py``, ``media.py`` and
their query models), not its docs:

- ``GET /api/events``: ``after``/``before`` are strict bounds on ``start_time`` (``after=0``
  is ignored), newest first, ``limit`` defaults to 100 with no maximum and no offset;
  ``include_thumbnails`` defaults to 1 (adds a ``thumbnail`` column); the legacy
  ``top_score``, ``false_positive`` and ``box`` columns are null for tracked objects and
  the details live in ``data``; ``sub_label`` is the name only.
- ``GET /api/review``: segments *overlapping* the window (``start_time < before`` and
  ``end_time`` null or ``> after``), ``before`` defaults to now and ``after`` to now - 24 h,
  no limit by default, newest first.
- ``GET /api/<camera>/latest.jpg``: a JPEG; with no recent frame Frigate serves its last
  preview frame with ``X-Frigate-Offline: true``; an unknown camera is a 404.

Faults: ``mode`` ``slow`` (every answer ``delay`` late), ``garbage`` (an HTML page with
status 200), ``error`` (HTTP 500 with Frigate's ``{"success": false, ...}``); stop the
server for a Frigate that is down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.broker import free_port


def api_event(
    oid: str,
    camera: str,
    label: str,
    start: float,
    end: float | None,
    *,
    zones: list[str] | None = None,
    sub_label: str | None = None,
    sub_label_score: float | None = None,
    description: str | None = None,
    plate: str | None = None,
    top_score: float = 0.84,
) -> dict[str, Any]:
    """One ``/api/events`` row as Frigate's ``events()`` builds it (``include_thumbnails=0``)."""
    data: dict[str, Any] = {
        "box": [0.41, 0.3, 0.12, 0.35],
        "region": [0.3, 0.25, 0.4, 0.4],
        "score": top_score - 0.02,
        "top_score": top_score,
        "attributes": [],
        "type": "object",
        "max_severity": "alert",
        "path_data": [],
    }
    if sub_label is not None:
        data["sub_label_score"] = sub_label_score
    if description is not None:
        data["description"] = description
    if plate is not None:
        data["recognized_license_plate"] = plate
        data["recognized_license_plate_score"] = 0.93
    return {
        "id": oid,
        "camera": camera,
        "label": label,
        "zones": zones or [],
        "start_time": start,
        "end_time": end,
        "has_clip": True,
        "has_snapshot": True,
        "plus_id": None,
        "retain_indefinitely": False,
        "sub_label": sub_label,
        "top_score": None,
        "false_positive": None,
        "box": None,
        "data": data,
    }


def api_review(
    rid: str,
    camera: str,
    start: float,
    end: float | None,
    *,
    severity: str = "alert",
    detections: list[str] | None = None,
    objects: list[str] | None = None,
    sub_labels: list[str | None] | None = None,
    zones: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``/api/review`` row (``model_to_dict`` of a review segment)."""
    return {
        "id": rid,
        "camera": camera,
        "start_time": start,
        "end_time": end,
        "severity": severity,
        "thumb_path": f"/media/frigate/clips/review/thumb-{camera}-{rid}.webp",
        "data": {
            "detections": detections or [],
            "objects": objects or [],
            "verified_objects": [o for o in objects or [] if o.endswith("-verified")],
            "sub_labels": sub_labels or [],
            "zones": zones or [],
            "audio": [],
            "thumb_time": start + 1,
            "metadata": metadata,
        },
        "has_been_reviewed": 0,
    }


def _float(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    return float(raw) if raw not in (None, "") else None


@dataclass
class FakeFrigateApi:
    """The stand-in server; ``events``, ``reviews`` and ``frames`` are its data."""

    events: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    frames: dict[str, bytes] = field(default_factory=dict)
    offline_cameras: set[str] = field(default_factory=set)
    mode: str = "ok"
    delay: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None
    served: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/review", self._reviews)
        app.router.add_get("/api/config", self._config)
        app.router.add_get("/api/{camera}/latest.jpg", self._latest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeFrigateApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    async def _fault(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        self.served.set()
        if self.mode == "slow" or self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "garbage":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>")
        if self.mode == "error":
            return web.json_response({"success": False, "message": "Internal error"}, status=500)
        return None

    async def _events(self, request: web.Request) -> web.Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        after, before = _float(request, "after"), _float(request, "before")
        limit = int(request.query.get("limit", "100"))
        rows = [
            e
            for e in self.events
            if (not after or e["start_time"] > after)
            and (before is None or e["start_time"] < before)
        ]
        rows.sort(key=lambda e: e["start_time"], reverse=True)
        rows = rows[:limit]
        if request.query.get("include_thumbnails", "1") == "1":
            rows = [dict(r, thumbnail="/9j/4AAQSkZJRg==") for r in rows]
        return web.json_response(rows)

    async def _reviews(self, request: web.Request) -> web.Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        now = time.time()
        before = _float(request, "before") or now
        after = _float(request, "after") or now - 86_400
        rows = [
            r
            for r in self.reviews
            if r["start_time"] < before and (r["end_time"] is None or r["end_time"] > after)
        ]
        rows.sort(key=lambda r: r["start_time"], reverse=True)
        if "limit" in request.query:
            rows = rows[: int(request.query["limit"])]
        return web.json_response(rows)

    async def _config(self, request: web.Request) -> web.Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        return web.json_response({"cameras": {}})

    async def _latest(self, request: web.Request) -> web.Response:
        if (fault := await self._fault(request)) is not None:
            return fault
        camera = request.match_info["camera"]
        if camera not in self.frames:
            return web.json_response({"success": False, "message": "Camera not found"}, status=404)
        headers = {"X-Frigate-Offline": "true"} if camera in self.offline_cameras else {}
        return web.Response(body=self.frames[camera], content_type="image/jpeg", headers=headers)

"""Importing Frigate's own history (``/api/events``, ``/api/review``) into lookout's.

lookout hears of events and reviews over MQTT only while it runs. With ``frigate.url``
set, it also asks Frigate's HTTP API: at start for the whole retention window, and
after every reconnect (lookout's to the broker, or Frigate coming back) for the gap
since the newest event it has, including what it still has open. Rows go through the
same batched, idempotent upserts as MQTT messages, so importing twice changes nothing,
and Frigate's end times replace the ones lookout made up when Frigate went away.

The API's shapes, from Frigate's source: ``GET /api/events`` filters on start time with
strict ``after``/``before`` bounds, returns newest first, at most ``limit`` rows (default
100) and has no offset, so pages are walked backwards by ``before`` (the oldest start of
the last page, which a strict bound would skip if two rows share it: the page boundary
is re-read and de-duplicated by id). ``sub_label`` is the name only, the other details
are in ``data`` (``top_score``, ``sub_label_score``, ``description``,
``recognized_license_plate``). ``GET /api/review`` returns every segment overlapping
the window (no limit by default), so it is read in windows of a few hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from service.frigate.payloads import (
    CameraName,
    FrigateId,
    Label,
    OptionalFloat,
    Review,
    ShortText,
    Timestamp,
    Zones,
    clean_name,
    parse_plate,
)
from service.frigate.updates import review_patch
from service.store import EventPatch, EventStore

log = structlog.get_logger(__name__)

PAGE_SIZE = 500
REVIEW_WINDOW_S = 6 * 3600.0
MAX_PAGES = 10_000
"""A bound against a server that keeps answering full pages without moving on."""


class HistoryError(Exception):
    """Frigate's API could not be read; ``reason`` is short and stable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _ApiEvent(BaseModel):
    """One row of ``GET /api/events`` (the columns lookout keeps)."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    id: FrigateId
    camera: CameraName
    label: Label
    sub_label: ShortText = None
    zones: Zones = ()
    start_time: Timestamp
    end_time: OptionalFloat = None
    has_clip: bool | None = None
    has_snapshot: bool | None = None
    top_score: OptionalFloat = None
    data: dict[str, Any] | None = None

    def patch(self, now: float) -> EventPatch:
        data = self.data or {}
        name = clean_name(self.sub_label)
        score = data.get("sub_label_score")
        plate, _ = parse_plate(data.get("recognized_license_plate"))
        description = data.get("description")
        text = description.strip()[:8000] if isinstance(description, str) else ""
        top = data.get("top_score", self.top_score)
        return EventPatch(
            id=self.id,
            start_time=self.start_time,
            updated_at=now,
            full=True,
            camera=self.camera,
            label=self.label,
            sub_label=name,
            sub_label_score=float(score) if name and isinstance(score, int | float) else None,
            zones=self.zones,
            end_time=self.end_time,
            top_score=float(top) if isinstance(top, int | float) else None,
            has_clip=self.has_clip,
            has_snapshot=self.has_snapshot,
            description=text or None,
            plate=plate,
        )


@dataclass
class ImportState:
    """What the importer is doing, for ``health`` and for answers about the past.

    Attributes:
        state: ``idle`` (never ran or no ``frigate.url``), ``running``, ``done``,
            ``retrying`` (the last attempt failed; it tries again) or ``failed``.
        window_from: Start of the window being (or last) imported.
        window_to: Its end.
        events: Event rows imported by the current or last run.
        reviews: Review rows imported by it.
        rejected: Rows that did not validate (skipped).
        error: The last failure, in words.
        finished_at: When the last run ended.
        runs: Runs finished (successfully or not).
    """

    state: str = "idle"
    window_from: float | None = None
    window_to: float | None = None
    events: int = 0
    reviews: int = 0
    rejected: int = 0
    error: str | None = None
    finished_at: float | None = None
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class HistoryImporter:
    """Reads Frigate's events and reviews for a window and submits them to the store.

    Args:
        url: Frigate's base URL (``http://frigate:5000``).
        timeout: Seconds for each HTTP request.
        store: Where the rows go.
        clock: Wall clock (injected in tests).
        transport: For tests (``httpx2.MockTransport``); default: the network.
        page_size: Events asked for per request.
    """

    url: str
    timeout: float
    store: EventStore
    clock: Callable[[], float] = time.time
    transport: httpx2.AsyncBaseTransport | None = None
    page_size: int = PAGE_SIZE
    status: ImportState = field(default_factory=ImportState)

    async def run(self, after: float, before: float) -> None:
        """Import ``(after, before)``; progress and failure land in :attr:`status`.

        Raises:
            HistoryError: Frigate could not be read (the rows read so far are kept).
        """
        s = self.status
        s.state, s.window_from, s.window_to = "running", after, before
        s.events = s.reviews = s.rejected = 0
        s.error = None
        log.info("frigate_history_import_started", after=after, before=before)
        try:
            async with httpx2.AsyncClient(
                base_url=self.url.rstrip("/"), timeout=self.timeout, transport=self.transport
            ) as http:
                await self._events(http, after, before)
                await self._reviews(http, after, before)
        except HistoryError as exc:
            s.state, s.error = "retrying", f"{exc.reason}: {exc}"
            raise
        finally:
            s.finished_at = self.clock()
            s.runs += 1
        s.state = "done"
        log.info(
            "frigate_history_import_done",
            events=s.events,
            reviews=s.reviews,
            rejected=s.rejected,
            after=after,
            before=before,
        )

    async def _events(self, http: httpx2.AsyncClient, after: float, before: float) -> None:
        upper = before
        boundary: set[str] = set()
        for _ in range(MAX_PAGES):
            rows = await _get(
                http,
                "/api/events",
                {
                    "after": after,
                    "before": upper,
                    "limit": self.page_size,
                    "include_thumbnails": 0,
                },
            )
            now = self.clock()
            oldest = upper
            fresh = 0
            for raw in rows:
                try:
                    event = _ApiEvent.model_validate(raw)
                except ValidationError:
                    self.status.rejected += 1
                    continue
                oldest = min(oldest, event.start_time)
                if event.id in boundary:
                    continue
                fresh += 1
                self.store.submit(event.patch(now))
            self.status.events += fresh
            await self.store.flush()
            log.debug("frigate_history_events_page", rows=len(rows), new=fresh, before=upper)
            if len(rows) < self.page_size or oldest <= after:
                return
            # Strict bounds: rows starting exactly at `oldest` may continue on the next
            # page, so ask again from just above it and skip the ids already taken.
            boundary = {r.get("id") for r in rows if r.get("start_time") == oldest}
            next_upper = oldest + 1e-6
            if next_upper >= upper:
                next_upper = oldest  # every row shares one start: move past it
            upper = next_upper
        raise HistoryError("no_progress", "Frigate kept answering full pages of events")

    async def _reviews(self, http: httpx2.AsyncClient, after: float, before: float) -> None:
        # Windows overlap at their edges (Frigate returns segments overlapping a window),
        # so a segment may come twice: it is written twice (idempotent) but counted once.
        seen: set[str] = set()
        start = after
        while start < before:
            end = min(before, start + REVIEW_WINDOW_S)
            rows = await _get(http, "/api/review", {"after": start, "before": end})
            now = self.clock()
            for raw in rows:
                try:
                    review = Review.model_validate(raw)
                except ValidationError:
                    self.status.rejected += 1
                    continue
                self.store.submit_review(review_patch(review, now))
                if review.id not in seen:
                    seen.add(review.id)
                    self.status.reviews += 1
            await self.store.flush()
            start = end


async def _get(http: httpx2.AsyncClient, path: str, params: dict[str, Any]) -> list[Any]:
    # Frigate's nginx caches JSON answers for 5 s; a history import wants the truth.
    headers = {"Accept": "application/json", "X-Cache-Bypass": "1"}
    try:
        response = await http.get(path, params=params, headers=headers)
    except httpx2.TimeoutException:
        raise HistoryError("timeout", f"Frigate did not answer {path} in time") from None
    except httpx2.HTTPError as exc:
        raise HistoryError("unreachable", f"{path}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise HistoryError("http_status", f"{path} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise HistoryError("not_json", f"{path} did not answer JSON") from None
    if not isinstance(body, list):
        raise HistoryError("unexpected", f"{path} did not answer a list")
    return body

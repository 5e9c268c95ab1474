"""Tables and row types of the event & review history, and how partial updates merge.

Frigate tells lookout about one tracked object in several messages, from two topics:
``frigate/events`` (the object itself: camera, label, zones, times) and
``frigate/tracked_object_update`` (a GenAI description, a face, a plate), which may
arrive before the event row exists. Each message becomes an :class:`EventPatch`:
only the fields it knows are set. Patches for the same id merge in memory before a
batch is written, and the SQL upsert merges them with the stored row the same way
(``COALESCE(new, old)``), so arrival order does not matter.

Zones live twice: as a JSON list on the row (returned to callers) and as one
``event_zones`` row per (event, zone), indexed by ``(zone, start_time)``, because "in
any of these zones" must be fast both for busy zones and for a zone that saw three
objects in a year (see ``EventStore.search``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from service.store.db import metadata

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    # camera/label are NULL only on a fragment written by a tracked_object_update
    # that beat its event; searches skip such rows until the event fills them in.
    sa.Column("camera", sa.String(64)),
    sa.Column("label", sa.String(64)),
    sa.Column("sub_label", sa.String(128)),
    sa.Column("sub_label_score", sa.Float),
    sa.Column("zones", sa.JSON(none_as_null=True)),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float),
    sa.Column("top_score", sa.Float),
    sa.Column("has_clip", sa.Boolean),
    sa.Column("has_snapshot", sa.Boolean),
    sa.Column("description", sa.Text),
    sa.Column("plate", sa.String(128)),
    sa.Column("face", sa.String(128)),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Added after the first release (columns an upgrade adds to an existing table):
    sa.Column("face_score", sa.Float),
    sa.Column("end_reason", sa.String(32)),
)
sa.Index("ix_events_camera_start", events_table.c.camera, events_table.c.start_time)
sa.Index("ix_events_label_start", events_table.c.label, events_table.c.start_time)
sa.Index("ix_events_start", events_table.c.start_time)
# Expression index: sub label search is case-insensitive and must use the same expression.
sa.Index(
    "ix_events_sub_label_start", sa.func.lower(events_table.c.sub_label), events_table.c.start_time
)

event_zones_table = sa.Table(
    "event_zones",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("zone", sa.String(64), primary_key=True),
    sa.Column("start_time", sa.Float, nullable=False),
)
sa.Index("ix_event_zones_zone_start", event_zones_table.c.zone, event_zones_table.c.start_time)

reviews_table = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float),
    sa.Column("severity", sa.String(32), nullable=False),
    sa.Column("objects", sa.JSON(none_as_null=True)),
    sa.Column("sub_labels", sa.JSON(none_as_null=True)),
    sa.Column("zones", sa.JSON(none_as_null=True)),
    sa.Column("audio", sa.JSON(none_as_null=True)),
    sa.Column("detections", sa.JSON(none_as_null=True)),
    sa.Column("title", sa.String(128)),
    sa.Column("summary", sa.Text),
    sa.Column("short_summary", sa.Text),
    sa.Column("threat_level", sa.Integer),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("end_reason", sa.String(32)),
    sa.Column("detections_dropped", sa.Integer),
)
sa.Index("ix_reviews_start", reviews_table.c.start_time)
# end_time has its own index so "overlapping the window" (end_time > after) is a range scan.
sa.Index("ix_reviews_end", reviews_table.c.end_time)
sa.Index("ix_reviews_camera_start", reviews_table.c.camera, reviews_table.c.start_time)

TABLES = (events_table, event_zones_table, reviews_table)

END_REASONS = {
    "frigate_went_away": "Frigate went offline or restarted while it was open and sent no end; "
    "this is when Frigate went away",
    "not_reported": "Frigate stopped reporting it without an end; this is the last time "
    "lookout heard of it",
}
"""Why lookout, not Frigate, ended an event or review (``end_reason``), in words for answers."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One tracked object from the history, as search returns it.

    ``sub_label`` is the name Frigate gave the object (its ``[name, score]`` split into
    two fields); ``face`` is face recognition's best guess with ``face_score`` (a guess:
    Frigate names the object only once the score reaches its threshold); ``plate`` comes
    from LPR; ``zones`` are the zones the object entered; ``description`` is the GenAI
    description; ``end_reason`` says why lookout ended it when Frigate sent no end.
    """

    id: str
    camera: str
    label: str
    sub_label: str | None
    sub_label_score: float | None
    zones: tuple[str, ...]
    start_time: float
    end_time: float | None
    top_score: float | None
    has_clip: bool
    has_snapshot: bool
    description: str | None
    plate: str | None
    face: str | None
    updated_at: float
    face_score: float | None = None
    end_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (zones as a list)."""
        out = asdict(self)
        out["zones"] = list(self.zones)
        return out


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One review segment (alert or detection), with GenAI's summary when there is one.

    ``summary`` is Frigate's ``metadata.scene``; ``threat_level`` is
    ``potential_threat_level`` (0 normal, 1 needs review, 2 security concern).
    """

    id: str
    camera: str
    start_time: float
    end_time: float | None
    severity: str
    objects: tuple[str, ...]
    sub_labels: tuple[str, ...]
    zones: tuple[str, ...]
    audio: tuple[str, ...]
    detections: tuple[str, ...]
    title: str | None
    summary: str | None
    short_summary: str | None
    threat_level: int | None
    updated_at: float
    end_reason: str | None = None
    detections_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        out = asdict(self)
        for key in ("objects", "sub_labels", "zones", "audio", "detections"):
            out[key] = list(out[key])
        return out


_EVENT_FIELDS = (
    "camera",
    "label",
    "end_time",
    "top_score",
    "has_clip",
    "has_snapshot",
    "description",
    "plate",
    "face",
    "face_score",
)


@dataclass(slots=True)
class EventPatch:
    """What one message says about one tracked object; ``None`` means "not said".

    ``full`` marks data from ``frigate/events`` itself (or Frigate's own history API):
    its ``start_time``, ``sub_label`` and end are authoritative, ``sub_label_cleared``
    says Frigate removed the sub label, and an event lookout had ended on its own
    (``end_reason``) is reopened or re-ended by it. A patch from a plate or classifier
    update is not full: its ``sub_label`` only fills an empty one, and its
    ``start_time`` (taken from the id) only counts if the row does not exist yet.
    """

    id: str
    start_time: float
    updated_at: float
    full: bool = False
    camera: str | None = None
    label: str | None = None
    sub_label: str | None = None
    sub_label_score: float | None = None
    zones: tuple[str, ...] | None = None
    end_time: float | None = None
    top_score: float | None = None
    has_clip: bool | None = None
    has_snapshot: bool | None = None
    description: str | None = None
    plate: str | None = None
    face: str | None = None
    face_score: float | None = None
    sub_label_cleared: bool = False

    def merge(self, newer: EventPatch) -> None:
        """Fold a later patch for the same id into this one."""
        for name in _EVENT_FIELDS:
            value = getattr(newer, name)
            if value is not None:
                setattr(self, name, value)
        if newer.zones is not None:
            # entered_zones only grows, but a union keeps that true even if messages
            # were reordered on the way.
            merged = dict.fromkeys(self.zones or ())
            merged.update(dict.fromkeys(newer.zones))
            self.zones = tuple(merged)
        if newer.full and newer.sub_label_cleared:
            self.sub_label, self.sub_label_score, self.sub_label_cleared = None, None, True
        elif newer.sub_label is not None and (newer.full or self.sub_label is None):
            self.sub_label = newer.sub_label
            self.sub_label_score = newer.sub_label_score
            self.sub_label_cleared = False
        if newer.full:
            self.start_time = newer.start_time
        elif not self.full:
            self.start_time = min(self.start_time, newer.start_time)
        self.full = self.full or newer.full
        self.updated_at = max(self.updated_at, newer.updated_at)

    def params(self) -> dict[str, Any]:
        """Bind parameters for the upsert: every column, ``None`` where unknown."""
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "sub_label": self.sub_label,
            "sub_label_score": self.sub_label_score,
            "zones": list(self.zones) if self.zones is not None else None,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "top_score": self.top_score,
            "has_clip": self.has_clip,
            "has_snapshot": self.has_snapshot,
            "description": self.description,
            "plate": self.plate,
            "face": self.face,
            "face_score": self.face_score,
            "end_reason": None,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class ReviewPatch:
    """What one ``frigate/reviews`` message says about a review segment."""

    id: str
    camera: str
    start_time: float
    severity: str
    updated_at: float
    end_time: float | None = None
    objects: tuple[str, ...] = ()
    sub_labels: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()
    detections: tuple[str, ...] = ()
    title: str | None = None
    summary: str | None = None
    short_summary: str | None = None
    threat_level: int | None = None
    detections_dropped: int = 0

    def merge(self, newer: ReviewPatch) -> None:
        """Fold a later message for the same review into this one (later values win)."""
        for name in ("camera", "start_time", "severity", "objects", "sub_labels", "zones"):
            setattr(self, name, getattr(newer, name))
        for name in ("audio", "detections", "detections_dropped", "updated_at"):
            setattr(self, name, getattr(newer, name))
        for name in ("end_time", "title", "summary", "short_summary", "threat_level"):
            value = getattr(newer, name)
            if value is not None:
                setattr(self, name, value)

    def params(self) -> dict[str, Any]:
        """Bind parameters for the upsert."""
        return {
            "id": self.id,
            "camera": self.camera,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "severity": self.severity,
            "objects": list(self.objects),
            "sub_labels": list(self.sub_labels),
            "zones": list(self.zones),
            "audio": list(self.audio),
            "detections": list(self.detections),
            "title": self.title,
            "summary": self.summary,
            "short_summary": self.short_summary,
            "threat_level": self.threat_level,
            "updated_at": self.updated_at,
            "end_reason": None,
            "detections_dropped": self.detections_dropped,
        }


def _tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()


def event_row(mapping: Any) -> EventRow:
    """Build an :class:`EventRow` from a result row mapping."""
    return EventRow(
        id=mapping["id"],
        camera=mapping["camera"] or "",
        label=mapping["label"] or "",
        sub_label=mapping["sub_label"],
        sub_label_score=mapping["sub_label_score"],
        zones=_tuple(mapping["zones"]),
        start_time=mapping["start_time"],
        end_time=mapping["end_time"],
        top_score=mapping["top_score"],
        has_clip=bool(mapping["has_clip"]),
        has_snapshot=bool(mapping["has_snapshot"]),
        description=mapping["description"],
        plate=mapping["plate"],
        face=mapping["face"],
        updated_at=mapping["updated_at"],
        face_score=mapping["face_score"],
        end_reason=mapping["end_reason"],
    )


def review_row(mapping: Any) -> ReviewRow:
    """Build a :class:`ReviewRow` from a result row mapping."""
    return ReviewRow(
        id=mapping["id"],
        camera=mapping["camera"],
        start_time=mapping["start_time"],
        end_time=mapping["end_time"],
        severity=mapping["severity"],
        objects=_tuple(mapping["objects"]),
        sub_labels=_tuple(mapping["sub_labels"]),
        zones=_tuple(mapping["zones"]),
        audio=_tuple(mapping["audio"]),
        detections=_tuple(mapping["detections"]),
        title=mapping["title"],
        summary=mapping["summary"],
        short_summary=mapping["short_summary"],
        threat_level=mapping["threat_level"],
        updated_at=mapping["updated_at"],
        end_reason=mapping["end_reason"],
        detections_dropped=mapping["detections_dropped"] or 0,
    )

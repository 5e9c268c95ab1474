"""Turning validated Frigate payloads into history patches (pure functions)."""

from __future__ import annotations

from service.frigate.payloads import (
    ClassificationUpdate,
    DescriptionUpdate,
    FaceUpdate,
    FrigateObject,
    LprUpdate,
    Review,
    UpdateHead,
)
from service.store import EventPatch, ReviewPatch


def event_patch(obj: FrigateObject, now: float) -> EventPatch:
    """The history row a ``frigate/events`` ``after`` object describes."""
    zones = dict.fromkeys(obj.entered_zones)
    zones.update(dict.fromkeys(obj.current_zones))
    sub = obj.sub_label
    return EventPatch(
        id=obj.id,
        start_time=obj.start_time,
        updated_at=now,
        full=True,
        camera=obj.camera,
        label=obj.label,
        sub_label=sub.name if sub else None,
        sub_label_score=sub.score if sub and sub.name else None,
        sub_label_cleared=sub is not None and sub.name is None,
        zones=tuple(zones),
        end_time=obj.end_time,
        top_score=obj.top_score,
        has_clip=obj.has_clip,
        has_snapshot=obj.has_snapshot,
        plate=obj.plate,
    )


def update_name(update: UpdateHead) -> tuple[str | None, float | None]:
    """The name an update gives the object, as Frigate itself would.

    A known plate's owner and a sub-label classifier's class are names: Frigate sets
    the object's sub label to them in the same step. A face update is not: it is sent on
    every recognition attempt whatever its score, and Frigate names the person only once
    the score reaches its threshold (that name then comes in ``frigate/events``).
    """
    if isinstance(update, LprUpdate):
        return update.name, update.score
    if isinstance(update, ClassificationUpdate):
        return update.sub_label, update.score
    return None, None


def update_patch(update: UpdateHead, start_time: float, now: float) -> EventPatch | None:
    """The history patch a ``frigate/tracked_object_update`` message describes.

    Args:
        update: The validated update.
        start_time: Best guess of the object's start (from its id) in case the event
            row does not exist yet.
        now: Receipt time.

    Returns:
        ``None`` when the update carries nothing lookout stores.
    """
    name, score = update_name(update)
    patch = EventPatch(
        id=update.id,
        start_time=start_time,
        updated_at=now,
        camera=update.camera,
        sub_label=name,
        sub_label_score=score if name else None,
    )
    if isinstance(update, DescriptionUpdate):
        patch.description = update.description
    elif isinstance(update, FaceUpdate) and update.name is not None:
        patch.face, patch.face_score = update.name, update.score
    elif isinstance(update, LprUpdate):
        patch.plate = update.plate
    if patch.description is None and patch.face is None and patch.plate is None and name is None:
        return None
    return patch


def review_patch(review: Review, now: float) -> ReviewPatch:
    """The history row a ``frigate/reviews`` ``after`` object describes."""
    meta = review.data.metadata
    return ReviewPatch(
        id=review.id,
        camera=review.camera,
        start_time=review.start_time,
        severity=review.severity,
        updated_at=now,
        end_time=review.end_time,
        objects=review.data.objects,
        sub_labels=review.data.sub_labels,
        zones=review.data.zones,
        audio=review.data.audio,
        detections=review.data.detections,
        detections_dropped=review.data.detections_dropped,
        title=meta.title if meta else None,
        summary=meta.scene if meta else None,
        short_summary=meta.shortSummary if meta else None,
        threat_level=meta.potential_threat_level if meta else None,
    )

"""Pydantic models for the JSON that Frigate publishes on MQTT, validated at the edge.

Frigate's objects carry dozens of fields and grow new ones every release, so every
model ignores unknown keys and only declares what lookout reads. Where Frigate (or a
third-party publisher imitating it) is loose about a field's shape, the validator
normalises instead of rejecting the whole message: a malformed ``sub_label`` becomes
``None``, a zone list keeps only the names that are safe topic levels. What must be
right for the message to mean anything (``id``, ``camera``, ``label``, times) is
strict, so garbage is rejected and counted by the caller.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from service.settings import NAME_RE

MAX_PAYLOAD_BYTES = 1_048_576
"""Larger Frigate payloads are rejected unread (an event with a long ``path_data`` is ~10 KB)."""
MAX_TEXT = 8_000
"""GenAI descriptions and summaries are cut to this many characters."""
MAX_LIST = 64


class SubLabel(NamedTuple):
    """Frigate's sub label (a face, a plate owner, a classification) with its score."""

    name: str
    score: float | None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _clean_text(value: str, limit: int) -> str:
    # NUL bytes are legal JSON but PostgreSQL text refuses them; lone surrogates (legal
    # in Python strings) cannot be encoded by any database driver.
    text = value.replace("\x00", "").strip()[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


def parse_sub_label(value: Any) -> SubLabel | None:
    """Normalise Frigate's ``sub_label``: ``[name, score]``, ``null`` or a plain string.

    Args:
        value: The raw JSON value.

    Returns:
        The name and score, or ``None`` when there is no usable name.
    """
    name: Any = value
    score: float | None = None
    if isinstance(value, list | tuple):
        if not value:
            return None
        name = value[0]
        score = _finite(value[1]) if len(value) > 1 else None
    if not isinstance(name, str):
        return None
    name = _clean_text(name, 128)
    return SubLabel(name, score) if name else None


def _names(value: Any) -> tuple[str, ...]:
    """Keep the entries that are safe names (zones, cameras), in order, without repeats."""
    if not isinstance(value, list | tuple):
        return ()
    seen: dict[str, None] = {}
    for item in value[: MAX_LIST * 4]:
        if isinstance(item, str) and NAME_RE.fullmatch(item):
            seen.setdefault(item, None)
    return tuple(seen)[:MAX_LIST]


def _strings(value: Any) -> tuple[str, ...]:
    """Keep the non-empty strings of a list (labels, sub labels, audio types)."""
    if not isinstance(value, list | tuple):
        return ()
    out: dict[str, None] = {}
    for item in value[: MAX_LIST * 4]:
        if isinstance(item, str) and (text := _clean_text(item, 128)):
            out.setdefault(text, None)
    return tuple(out)[:MAX_LIST]


def _optional_text(limit: int) -> BeforeValidator:
    def parse(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        return _clean_text(value, limit) or None

    return BeforeValidator(parse)


def _lenient_float(value: Any) -> float | None:
    return _finite(value)


FrigateId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
"""Tracked-object and review ids: ``<start_ts>-<6 chars>``, printable ASCII without spaces."""
CameraName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Timestamp = Annotated[float, Field(gt=0, lt=1e11)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
Strings = Annotated[tuple[str, ...], BeforeValidator(_strings)]
OptionalFloat = Annotated[float | None, BeforeValidator(_lenient_float)]
ShortText = Annotated[str | None, _optional_text(128)]
LongText = Annotated[str | None, _optional_text(MAX_TEXT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class FrigateObject(_Model):
    """One tracked object as Frigate sends it in ``before``/``after`` of ``frigate/events``."""

    id: FrigateId
    camera: CameraName
    label: Label
    sub_label: Annotated[SubLabel | None, BeforeValidator(parse_sub_label)] = None
    start_time: Timestamp
    end_time: Annotated[float | None, BeforeValidator(_lenient_float)] = None
    frame_time: OptionalFloat = None
    score: OptionalFloat = None
    top_score: OptionalFloat = None
    false_positive: bool = False
    stationary: bool = False
    current_zones: Names = ()
    entered_zones: Names = ()
    has_clip: bool = False
    has_snapshot: bool = False
    recognized_license_plate: ShortText = None
    recognized_license_plate_score: OptionalFloat = None


class EventMessage(_Model):
    """A ``frigate/events`` message; ``before`` is kept raw and parsed only when needed."""

    type: Literal["new", "update", "end"]
    before: dict[str, Any] | None = None
    after: FrigateObject

    def before_object(self) -> FrigateObject | None:
        """``before`` as a :class:`FrigateObject`, or ``None`` if it is absent or malformed."""
        if not self.before:
            return None
        try:
            return FrigateObject.model_validate(self.before)
        except ValueError:
            return None


class UpdateHead(_Model):
    """The part every ``frigate/tracked_object_update`` message shares."""

    type: Annotated[str, StringConstraints(max_length=32)]
    id: FrigateId
    camera: CameraName | None = None
    timestamp: Annotated[float | None, BeforeValidator(_lenient_float)] = None


class DescriptionUpdate(UpdateHead):
    """GenAI wrote (or rewrote) the object's description."""

    type: Literal["description"]
    description: LongText = None


class FaceUpdate(UpdateHead):
    """Face recognition named the person (``name`` may be null: unknown face)."""

    type: Literal["face"]
    name: ShortText = None
    score: OptionalFloat = None


class LprUpdate(UpdateHead):
    """A licence plate was read; ``name`` is the known-plate owner when configured."""

    type: Literal["lpr"]
    plate: ShortText = None
    name: ShortText = None
    score: OptionalFloat = None


class ClassificationUpdate(UpdateHead):
    """A custom classification model reached consensus (sub label or attribute)."""

    type: Literal["classification"]
    sub_label: ShortText = None
    attribute: ShortText = None
    model: ShortText = None
    score: OptionalFloat = None


TrackedObjectUpdate = DescriptionUpdate | FaceUpdate | LprUpdate | ClassificationUpdate
UPDATE_MODELS: dict[str, type[UpdateHead]] = {
    "description": DescriptionUpdate,
    "face": FaceUpdate,
    "lpr": LprUpdate,
    "classification": ClassificationUpdate,
}


def _threat(value: Any) -> int | None:
    number = _finite(value)
    if number is None or not 0 <= number <= 9:
        return None
    return int(number)


class ReviewMetadata(_Model):
    """GenAI's review summary (``data.metadata``, sent with the undocumented ``genai`` type)."""

    title: ShortText = None
    scene: LongText = None
    shortSummary: LongText = None  # noqa: N815 - Frigate's key
    confidence: OptionalFloat = None
    potential_threat_level: Annotated[int | None, BeforeValidator(_threat)] = None


def _metadata(value: Any) -> ReviewMetadata | None:
    if not isinstance(value, dict):
        return None
    try:
        return ReviewMetadata.model_validate(value)
    except ValueError:
        return None


class ReviewData(_Model):
    """What a review segment contains."""

    detections: Annotated[tuple[str, ...], BeforeValidator(_strings)] = ()
    objects: Strings = ()
    sub_labels: Strings = ()
    zones: Names = ()
    audio: Strings = ()
    metadata: Annotated[ReviewMetadata | None, BeforeValidator(_metadata)] = None


class Review(_Model):
    """One review segment (alert or detection) as in ``frigate/reviews``."""

    id: FrigateId
    camera: CameraName
    start_time: Timestamp
    end_time: Annotated[float | None, BeforeValidator(_lenient_float)] = None
    severity: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    data: ReviewData = Field(default_factory=ReviewData)


class ReviewMessage(_Model):
    """A ``frigate/reviews`` message."""

    type: Literal["new", "update", "end", "genai"]
    after: Review


def start_time_from_id(object_id: str) -> float | None:
    """Frigate ids start with the first frame's timestamp (``1718987129.308396-fqk5ka``)."""
    head = object_id.split("-", 1)[0]
    try:
        value = float(head)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 < value < 1e11 else None

"""Pydantic models for the JSON that Frigate publishes on MQTT, validated at the edge.

Frigate's objects carry dozens of fields and grow new ones every release, so every
model ignores unknown keys and only declares what lookout reads. Where Frigate (or a
third-party publisher imitating it) is loose about a field's shape, the validator
normalises instead of rejecting the whole message: a malformed ``sub_label`` becomes
``None``, a zone list keeps the names Frigate allows and drops only unsafe ones
(counted). What must be right for the message to mean anything (``id``, ``camera``,
``label``, times) is strict, so garbage is rejected and counted by the caller.

The shapes follow Frigate's own code (``TrackedObject.to_dict``, the face, plate,
classification and description processors, the review maintainer), not its docs where
they differ: ``recognized_license_plate`` is ``[plate, score]``, ``sub_label`` is
``[name, score]``, ``[name, null]`` or ``[null, null]`` (cleared), and a face update's
``name`` is Frigate's running guess (``null`` when it has none), sent on every
recognition attempt whatever its score.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from service.settings import NAME_RE, is_zone_name

MAX_PAYLOAD_BYTES = 1_048_576
"""Larger Frigate payloads are rejected unread (an event with a long ``path_data`` is ~10 KB)."""
MAX_TEXT = 8_000
"""GenAI descriptions and summaries are cut to this many characters."""
MAX_LIST = 64
"""Most labels, zones or sub labels kept from one list (Frigate's lists are far shorter)."""
MAX_DETECTIONS = 2_000
"""Most object ids kept from a review's ``detections`` (Frigate puts no cap on it; the
rest are counted in ``detections_dropped``)."""
NOT_A_NAME = frozenset({"unknown", "none", "null"})
"""Values that never name anyone: guessers use them for "no match"."""
VERIFIED_SUFFIX = "-verified"
"""Frigate's review ``objects`` spell an object with a recognised name ``<label>-verified``."""


class SubLabel(NamedTuple):
    """Frigate's sub label (a face, a plate owner, a classification) with its score.

    ``name`` is ``None`` when Frigate cleared the sub label (it sends ``[null, null]``).
    """

    name: str | None
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


def clean_name(value: Any) -> str | None:
    """A recognised name, or ``None`` for anything that names nobody (``unknown``, ``""``)."""
    if not isinstance(value, str):
        return None
    name = _clean_text(value, 128)
    return name if name and name.casefold() not in NOT_A_NAME else None


def _pair(value: Any) -> tuple[Any, float | None]:
    """Split Frigate's ``[value, score]`` pairs; a bare value has no score."""
    if isinstance(value, list | tuple):
        if not value:
            return None, None
        return value[0], _finite(value[1]) if len(value) > 1 else None
    return value, None


def parse_sub_label(value: Any) -> SubLabel | None:
    """Normalise Frigate's ``sub_label``.

    Returns:
        ``None`` when nothing is said (``null``, or a value that names nobody such as
        ``unknown``), a :class:`SubLabel` with ``name=None`` when the sub label was
        cleared (``[null, null]``), else the name and its score.
    """
    raw, score = _pair(value)
    if isinstance(value, list | tuple) and value and (raw is None or str(raw).strip() == ""):
        return SubLabel(None, None)
    name = clean_name(raw)
    return SubLabel(name, score) if name else None


def parse_plate(value: Any) -> tuple[str | None, float | None]:
    """Frigate's ``recognized_license_plate``: ``[plate, score]`` (a string from imitators)."""
    raw, score = _pair(value)
    if not isinstance(raw, str):
        return None, None
    plate = _clean_text(raw, 128)
    return (plate, score) if plate else (None, None)


def _zones(value: Any, info: ValidationInfo) -> tuple[str, ...]:
    """Keep the zone names Frigate allows and lookout can store, in order, without repeats.

    The unsafe ones are appended to ``context["refused_zones"]`` when the caller passes
    a validation context with that list, so they can be counted and logged.
    """
    if not isinstance(value, list | tuple):
        return ()
    seen: dict[str, None] = {}
    refused = info.context.get("refused_zones") if isinstance(info.context, dict) else None
    for item in value[: MAX_LIST * 4]:
        if is_zone_name(item):
            seen.setdefault(item, None)
        elif isinstance(refused, list):
            refused.append(repr(item)[:80])
    return tuple(seen)[:MAX_LIST]


def _strings(value: Any, limit: int = MAX_LIST) -> tuple[str, ...]:
    """Keep the non-empty strings of a list (labels, sub labels, audio types)."""
    if not isinstance(value, list | tuple):
        return ()
    out: dict[str, None] = {}
    for item in value[: limit * 4]:
        if isinstance(item, str) and (text := _clean_text(item, 128)):
            out.setdefault(text, None)
    return tuple(out)[:limit]


def base_label(label: str) -> str:
    """``person-verified`` (a review's spelling of a named person) -> ``person``."""
    return label[: -len(VERIFIED_SUFFIX)] if label.endswith(VERIFIED_SUFFIX) else label


def _labels(value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(base_label(label) for label in _strings(value)))


def _detections(value: Any) -> tuple[str, ...]:
    return _strings(value, MAX_DETECTIONS)


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
"""Frigate requires ``^[a-zA-Z0-9_-]+$`` of camera names; lookout also caps the length."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Timestamp = Annotated[float, Field(gt=0, lt=1e11)]
Zones = Annotated[tuple[str, ...], BeforeValidator(_zones)]
Strings = Annotated[tuple[str, ...], BeforeValidator(_strings)]
OptionalFloat = Annotated[float | None, BeforeValidator(_lenient_float)]
ShortText = Annotated[str | None, _optional_text(128)]
LongText = Annotated[str | None, _optional_text(MAX_TEXT)]
Name = Annotated[str | None, BeforeValidator(clean_name)]


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
    current_zones: Zones = ()
    entered_zones: Zones = ()
    has_clip: bool = False
    has_snapshot: bool = False
    recognized_license_plate: Annotated[
        tuple[str | None, float | None], BeforeValidator(parse_plate)
    ] = (None, None)

    @property
    def plate(self) -> str | None:
        """The plate Frigate read, if any."""
        return self.recognized_license_plate[0]


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
    """GenAI wrote (or rewrote) the object's description (an audio transcript also comes so)."""

    type: Literal["description"]
    description: LongText = None


class FaceUpdate(UpdateHead):
    """A face recognition attempt: Frigate's running guess, whatever its score.

    Frigate sends one per attempt; ``name`` is the best of the attempts so far (``null``
    when there is none) and ``score`` its weighted score. Frigate itself names the
    object (its ``sub_label``) only once the score reaches its recognition threshold, and
    that name arrives in a later ``frigate/events`` message: this is a guess, not a name.
    """

    type: Literal["face"]
    name: Name = None
    score: OptionalFloat = None


class LprUpdate(UpdateHead):
    """A plate read above Frigate's threshold; ``name`` is the known-plate owner, if any.

    Frigate sets the object's sub label to ``name`` in the same step, so the owner is a
    name Frigate stands behind.
    """

    type: Literal["lpr"]
    plate: ShortText = None
    name: Name = None
    score: OptionalFloat = None


class ClassificationUpdate(UpdateHead):
    """A custom classification model reached consensus (sub label or attribute).

    A ``sub_label`` model's class becomes the object's sub label in Frigate too; an
    ``attribute`` model's class does not name the object.
    """

    type: Literal["classification"]
    sub_label: Name = None
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


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list | tuple) else 0


class ReviewData(_Model):
    """What a review segment contains.

    ``objects`` are labels with Frigate's ``-verified`` suffix removed (the names are in
    ``sub_labels``); ``detections_total`` is how many ids Frigate listed, of which at
    most :data:`MAX_DETECTIONS` are kept.
    """

    detections: Annotated[tuple[str, ...], BeforeValidator(_detections)] = ()
    objects: Annotated[tuple[str, ...], BeforeValidator(_labels)] = ()
    sub_labels: Strings = ()
    zones: Zones = ()
    audio: Strings = ()
    metadata: Annotated[ReviewMetadata | None, BeforeValidator(_metadata)] = None
    detections_total: int = 0

    @model_validator(mode="before")
    @classmethod
    def _total(cls, data: Any) -> Any:
        if isinstance(data, dict) and "detections_total" not in data:
            return {**data, "detections_total": _count(data.get("detections"))}
        return data

    @property
    def detections_dropped(self) -> int:
        """Ids Frigate listed that were not kept."""
        return max(0, self.detections_total - len(self.detections))


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

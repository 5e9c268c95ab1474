"""What a watch says to the vision model, and how its answer is read.

The model gets a system prompt naming the condition, then up to ``max_history`` earlier
frame/answer pairs, then the newest frame with its time and what the object detector
tracks. It answers with one JSON verdict::

    {"condition_met": false, "confidence": 0.9, "next_run_in": 120,
     "reasoning": "Only the parked car.", "notification_message": ""}

A JSON-schema ``response_format`` asks for exactly that where the server supports it;
:func:`parse_verdict` still copes with servers that ignore it: code fences, prose around
the object, ``<think>`` blocks, and an empty answer with the JSON in the reasoning.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MIN_NEXT_RUN_S: Final = 1
MAX_NEXT_RUN_S: Final = 300
DEFAULT_NEXT_RUN_S: Final = 30
"""Used when the answer has no usable ``next_run_in`` (Frigate's default too)."""
MAX_REASONING_CHARS: Final = 1000
MAX_MESSAGE_CHARS: Final = 500
MAX_ANSWER_CHARS: Final = 20_000
"""Only the end of a longer answer is searched (the verdict comes last)."""

VERDICT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "condition_met": {"type": "boolean"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "next_run_in": {"type": "integer", "minimum": MIN_NEXT_RUN_S, "maximum": MAX_NEXT_RUN_S},
        "reasoning": {"type": "string"},
        "notification_message": {"type": "string"},
    },
    "required": [
        "condition_met",
        "confidence",
        "next_run_in",
        "reasoning",
        "notification_message",
    ],
    "additionalProperties": False,
}
RESPONSE_FORMAT: Final[dict[str, Any]] = {
    "type": "json_schema",
    "json_schema": {"name": "watch_verdict", "strict": True, "schema": VERDICT_SCHEMA},
}
"""Sent with every watch call; the provider leaves it out where it is not supported."""

_SAFE = re.compile(r"[^\w .,'()&/-]", re.UNICODE)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_TRUE = frozenset({"true", "yes", "1", "met"})
_FALSE = frozenset({"false", "no", "0", "not met", ""})


class VerdictError(ValueError):
    """The model's answer holds no usable verdict."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One parsed answer.

    ``confidence`` is the model's own, 0 to 1; ``None`` when it gave none (servers that
    ignore the schema), which counts as sure: lookout does not hold back an alert for a
    number the model never gave.
    """

    condition_met: bool
    next_run_in: int
    reasoning: str
    notification_message: str
    confidence: float | None = None

    def to_json(self) -> str:
        """The canonical form kept in the conversation history."""
        body: dict[str, Any] = {"condition_met": self.condition_met}
        if self.confidence is not None:
            body["confidence"] = self.confidence
        body |= {
            "next_run_in": self.next_run_in,
            "reasoning": self.reasoning,
            "notification_message": self.notification_message,
        }
        return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SeenObject:
    """An object the detector tracks, as the model is told about it."""

    label: str
    stationary: bool
    zones: tuple[str, ...]


def _clean(text: str, limit: int = 60) -> str:
    return _SAFE.sub("", text)[:limit].strip()


def system_prompt(condition: str, labels: Iterable[str], zones: Iterable[str]) -> str:
    """The system message of a watch.

    Args:
        condition: What the user waits for, in their words.
        labels: Object classes that matter (empty: any).
        zones: Zone ids that matter (empty: the whole image).
    """
    focus = []
    labels, zones = [_clean(x) for x in labels], [_clean(x) for x in zones]
    if labels:
        focus.append("Only these kinds of object matter: " + ", ".join(labels) + ".")
    if zones:
        focus.append(
            "Only these zones of the image matter (as the detector names them): "
            + ", ".join(zones)
            + "."
        )
    lines = [
        "You watch one security camera for the user. Tell them as soon as this is true:",
        f'"{condition.strip()}"',
        *focus,
        "",
        "Each user message brings the newest still frame, the time it was taken and the "
        "objects the camera's detector is tracking. Earlier frames and your earlier answers "
        "stay in the conversation: use them to tell what is parked or static from what is "
        "new or moving.",
        "",
        "Reply with one JSON object and nothing else:",
        '{"condition_met": <true or false>, "confidence": <0 to 1>, '
        '"next_run_in": <whole seconds, 1-300>, '
        '"reasoning": "<one or two sentences>", "notification_message": "<text or empty>"}',
        "",
        "- condition_met: true only when the newest frame clearly shows the condition. "
        "When in doubt, false.",
        "- confidence: how sure you are of condition_met, from 0 (a guess) to 1 "
        "(certain). An unsure true is checked again on the next frame before the user "
        "is told.",
        "- next_run_in: when to look again. You are woken early anyway when the detector "
        "sees a new object, an object entering a zone, or a parked object starting to move, "
        "so do not ask for frequent looks at a scene that is not changing. 120-300 when "
        "nothing relevant is visible or only parked, still things; 10-30 when relevant "
        "objects are moving; 2-5 only when the condition looks about to happen.",
        "- reasoning: what you see that led to your answer.",
        "- notification_message: when condition_met is true, a short notification for a "
        'phone in plain words, such as "A courier left a parcel at the front door."; '
        "otherwise an empty string.",
    ]
    return "\n".join(lines)


def frame_text(camera_name: str, taken_at: str, objects: Iterable[SeenObject]) -> str:
    """The text that goes with a frame: camera, time and the detector's objects."""
    seen = []
    for obj in objects:
        where = f" in {', '.join(_clean(z) for z in obj.zones)}" if obj.zones else ""
        state = "stationary" if obj.stationary else "moving"
        seen.append(f"{_clean(obj.label, 30)} ({state}{where})")
    detector = "; ".join(seen[:20]) if seen else "nothing"
    return f"Frame from {_clean(camera_name)} taken at {taken_at}. The detector tracks: {detector}."


def user_message(text: str, data_url: str) -> dict[str, Any]:
    """A user message carrying one frame."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_url}},
        ],
    }


def build_messages(
    system: str,
    history: Iterable[tuple[dict[str, Any], dict[str, Any]]],
    current: dict[str, Any],
) -> list[dict[str, Any]]:
    """System prompt, earlier (user, assistant) pairs oldest first, then the new frame."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for user, assistant in history:
        messages += [user, assistant]
    messages.append(current)
    return messages


# -- parsing --------------------------------------------------------------------------


def _objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in ``text``, wherever it sits (fences and prose around)."""
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = text.find("{", end)
    return found


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise VerdictError(f"condition_met is not a boolean: {value!r}")


def _as_seconds(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return DEFAULT_NEXT_RUN_S
    try:
        seconds = round(float(value))
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_NEXT_RUN_S
    return max(MIN_NEXT_RUN_S, min(MAX_NEXT_RUN_S, seconds))


def _as_confidence(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(number):
        return None
    if 1 < number <= 100:
        number /= 100  # a percentage
    return max(0.0, min(1.0, number))


def _as_text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.strip()[:limit]


def _from_text(text: str) -> Verdict | None:
    text = _THINK.sub("", text, count=1)[-MAX_ANSWER_CHARS:]
    candidates = [o for o in _objects(text) if "condition_met" in o]
    if not candidates:
        return None
    # The last one: a model that thinks aloud writes drafts before its answer.
    data = candidates[-1]
    return Verdict(
        condition_met=_as_bool(data["condition_met"]),
        next_run_in=_as_seconds(data.get("next_run_in")),
        reasoning=_as_text(data.get("reasoning"), MAX_REASONING_CHARS),
        notification_message=_as_text(data.get("notification_message"), MAX_MESSAGE_CHARS),
        confidence=_as_confidence(data.get("confidence")),
    )


def parse_verdict(content: str, reasoning: str = "") -> Verdict:
    """Read a verdict from the answer, or from the reasoning when the answer has none.

    Servers that parse a hybrid model's thinking sometimes leave ``content`` empty and put
    everything, JSON included, in ``reasoning_content``; Frigate looped on such answers.

    Raises:
        VerdictError: Neither holds an object with ``condition_met``, or its value is
            not a boolean.
    """
    for text in (content, reasoning):
        if text and text.strip():
            verdict = _from_text(text)
            if verdict is not None:
                return verdict
    shown = (content or reasoning or "").strip().replace("\n", " ")[:120]
    raise VerdictError(f"the model's answer is not a verdict: {shown!r}")

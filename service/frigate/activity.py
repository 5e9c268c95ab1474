"""Frigate's ``camera_activity``: the true runtime state of every camera's features.

Frigate re-publishes its retained ``<camera>/<feature>/state`` topics on every broker
reconnect, and for ``enabled``, ``recordings``, ``audio`` and the review and GenAI
switches it publishes the value from its config file, not the one in force: a switch
turned off at runtime reads ``ON`` again after a Frigate reconnect. Publishing
``frigate/onConnect`` makes Frigate answer on ``frigate/camera_activity`` with each
camera's runtime ``config`` flags, which lookout folds into its mirror.
"""

from __future__ import annotations

import json
from typing import Any

from service.settings import NAME_RE

ACTIVITY_FEATURES = {
    "detect": "detect",
    "enabled": "enabled",
    "snapshots": "snapshots",
    "record": "recordings",
    "audio": "audio",
    "audio_transcription": "audio_transcription",
    "notifications": "notifications",
    "autotracking": "ptz_autotracker",
    "alerts": "review_alerts",
    "detections": "review_detections",
    "object_descriptions": "object_descriptions",
    "review_descriptions": "review_descriptions",
}
"""``camera_activity`` config key -> the feature's name in Frigate's state topics."""


def parse_activity(payload: bytes) -> dict[str, dict[str, str]]:
    """Camera -> feature -> ``ON``/``OFF`` from a ``camera_activity`` message.

    Cameras with unsafe names and keys that are not booleans are skipped.

    Raises:
        ValueError: Not a JSON object.
    """
    data: Any = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("camera_activity is not a JSON object")  # noqa: TRY004 - bad data, like bad JSON
    out: dict[str, dict[str, str]] = {}
    for camera, entry in data.items():
        config = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(camera, str) or not NAME_RE.fullmatch(camera):
            continue
        if not isinstance(config, dict):
            continue
        states = {
            feature: "ON" if config[key] else "OFF"
            for key, feature in ACTIVITY_FEATURES.items()
            if isinstance(config.get(key), bool)
        }
        if states:
            out[camera] = states
    return out

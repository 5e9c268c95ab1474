"""The camera and zone registry: what exists, what it is called, what state it is in.

Cameras and zones are learned with no configuration, from whatever Frigate publishes
(retained state topics, zone state topics, events, reviews); lookout's config and
Frigate's ``/api/config`` only add friendly names (config wins over the API). Names
are matched loosely — case, ``_``, ``-`` and spaces do not matter — because they come
from people and language models ("Front Door" for ``front_door``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from service.frigate.model import CameraInfo, ZoneInfo
from service.settings import CameraSettings

NameSource = Literal["settings", "api"]

RESERVED_FIRST_LEVELS = frozenset(
    {
        "available", "events", "reviews", "tracked_object_update", "stats", "camera_activity",
        "camera_monitoring", "job_state", "profile", "notifications", "triggers", "onConnect",
        "restart", "model_state", "embeddings_reindex_progress", "birdseye_layout",
        "audio_detections", "all",
    }
)  # fmt: skip
"""First levels under Frigate's prefix that are never a camera."""
MAX_CAMERAS = 512
MAX_ZONES_PER_CAMERA = 256

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise_name(name: str) -> str:
    """Fold case and treat ``_``, ``-`` and runs of spaces alike."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


def title_name(identifier: str) -> str:
    """``front_door`` -> ``Front Door`` (Frigate's own fallback for unnamed cameras)."""
    return _SEPARATORS.sub(" ", identifier).strip().title()


@dataclass
class _Camera:
    id: str
    names: dict[NameSource, str] = field(default_factory=dict)
    zones: dict[str, dict[NameSource, str]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    last_seen: float | None = None

    def friendly(self) -> str:
        return self.names.get("settings") or self.names.get("api") or title_name(self.id)

    def info(self) -> CameraInfo:
        zones = [
            ZoneInfo(zone, names.get("settings") or names.get("api") or title_name(zone))
            for zone, names in sorted(self.zones.items())
        ]
        return CameraInfo(self.id, self.friendly(), zones, dict(self.states), self.last_seen)


class CameraRegistry:
    """Known cameras and their zones, names and feature states."""

    def __init__(self) -> None:
        self._cameras: dict[str, _Camera] = {}
        self.overflow = 0
        """Cameras or zones refused because a limit was reached (a flood of fake names)."""

    def learn(self, camera: str, now: float | None = None) -> bool:
        """Note that ``camera`` exists (and was heard from at ``now``).

        Returns:
            ``False`` if the name is reserved or the registry is full.
        """
        entry = self._cameras.get(camera)
        if entry is None:
            if camera in RESERVED_FIRST_LEVELS or len(self._cameras) >= MAX_CAMERAS:
                self.overflow += camera not in RESERVED_FIRST_LEVELS
                return False
            entry = self._cameras[camera] = _Camera(camera)
        if now is not None:
            entry.last_seen = now
        return True

    def learn_zones(self, camera: str, zones: Iterable[str]) -> None:
        """Note zones seen on ``camera`` (the camera must be known)."""
        entry = self._cameras.get(camera)
        if entry is None:
            return
        for zone in zones:
            if zone not in entry.zones:
                if len(entry.zones) >= MAX_ZONES_PER_CAMERA:
                    self.overflow += 1
                    continue
                entry.zones[zone] = {}

    def apply_names(self, cameras: Mapping[str, CameraSettings], source: NameSource) -> None:
        """Add cameras, zones and friendly names from config or Frigate's API."""
        for camera, settings in cameras.items():
            if not self.learn(camera):
                continue
            entry = self._cameras[camera]
            if settings.friendly_name:
                entry.names[source] = settings.friendly_name
            for zone, friendly in settings.zones.items():
                self.learn_zones(camera, [zone])
                if zone in entry.zones and friendly:
                    entry.zones[zone][source] = friendly

    def set_state(self, camera: str, feature: str, value: str, now: float) -> bool:
        """Record a feature state; ``False`` if ``camera`` cannot be a camera."""
        if not self.learn(camera, now):
            return False
        self._cameras[camera].states[feature] = value
        return True

    def state(self, camera: str, feature: str) -> str | None:
        """The last state value of a camera feature, or ``None``."""
        entry = self._cameras.get(camera)
        return None if entry is None else entry.states.get(feature)

    def known(self, camera: str) -> bool:
        """Whether ``camera`` is a known camera id."""
        return camera in self._cameras

    def cameras(self) -> list[CameraInfo]:
        """Every known camera, sorted by id."""
        return [self._cameras[key].info() for key in sorted(self._cameras)]

    def camera(self, camera: str) -> CameraInfo | None:
        """One camera by id."""
        entry = self._cameras.get(camera)
        return None if entry is None else entry.info()

    def resolve_camera(self, name: str) -> str | None:
        """A camera id from its id or friendly name (case and separators ignored)."""
        if name in self._cameras:
            return name
        wanted = normalise_name(name)
        if not wanted:
            return None
        for entry in self._cameras.values():
            candidates = (entry.id, *entry.names.values(), entry.friendly())
            if any(normalise_name(c) == wanted for c in candidates):
                return entry.id
        return None

    def resolve_zone(self, name: str, cameras: Iterable[str] | None = None) -> list[str]:
        """Zone ids whose id or friendly name matches ``name``, on ``cameras`` (or all).

        Returns:
            Matching zone ids without repeats; empty when nothing matches.
        """
        wanted = normalise_name(name)
        if not wanted:
            return []
        keys = self._cameras if cameras is None else [c for c in cameras if c in self._cameras]
        found: dict[str, None] = {}
        for key in keys:
            for zone, names in self._cameras[key].zones.items():
                candidates = (zone, *names.values())
                if any(normalise_name(c) == wanted for c in candidates):
                    found.setdefault(zone, None)
        return list(found)

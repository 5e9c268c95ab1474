"""The mirror of Frigate: cameras, zones, feature states, live objects, history feed.

:class:`FrigateMirror` is fed by Frigate's MQTT topics (payloads validated at the edge,
in the shapes Frigate's own code publishes), keeps what the tools ask about in memory
and writes events and reviews into the store. :class:`Upkeep` does what Frigate's
comings and goings call for: it ends what Frigate left open, imports Frigate's history
from its HTTP API and asks for the true state of its cameras.
"""

from __future__ import annotations

from service.frigate.history import HistoryImporter, ImportState
from service.frigate.mirror import FrigateMirror
from service.frigate.model import Availability, Detection, LiveObject, MotionState
from service.frigate.upkeep import Upkeep

__all__ = [
    "Availability",
    "Detection",
    "FrigateMirror",
    "HistoryImporter",
    "ImportState",
    "LiveObject",
    "MotionState",
    "Upkeep",
]

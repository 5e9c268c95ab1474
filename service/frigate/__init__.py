"""The mirror of Frigate: cameras, zones, feature states, live objects, history feed.

:class:`FrigateMirror` is fed by Frigate's MQTT topics (payloads validated at the edge),
keeps what the tools ask about in memory, writes events and reviews into the store and
publishes ``<camera>/<feature>/set`` commands.
"""

from __future__ import annotations

from service.frigate.mirror import FrigateMirror
from service.frigate.model import Detection, LiveObject, MotionState

__all__ = [
    "Detection",
    "FrigateMirror",
    "LiveObject",
    "MotionState",
]

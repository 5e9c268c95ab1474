"""The camera watch: "tell me when…", many at once, durable across restarts.

A pure state machine (:mod:`service.watch.machine`: statuses, transitions, ``decide()``
with an injected clock), a runner per watch that does the I/O, and :class:`WatchEngine`
that starts, resumes, cancels and lists them and publishes their states and alerts.
"""

from __future__ import annotations

from service.watch.cluster import ClusterWatches
from service.watch.engine import WatchEngine
from service.watch.requests import WatchRequest

__all__ = [
    "ClusterWatches",
    "WatchEngine",
    "WatchRequest",
]

"""The composition root: builds every part, the route table and the long-lived tasks.

:mod:`service.app.root` wires one worker; :mod:`service.app.cluster` adds what a worker
of a cluster does besides (its lease, takeovers, roles, the sweep of dead workers'
broker sessions, its presence).
"""

from __future__ import annotations

from service.app.root import build, main, serve
from service.app.runtime import Runtime

__all__ = ["Runtime", "build", "main", "serve"]

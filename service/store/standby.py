"""A history writer on standby: what it would write, kept for a while, not written.

In a cluster one worker writes Frigate's history; the others hold the patches of the
last ``keep_s`` seconds here. When the writer dies, the worker that takes its role
writes these first: whatever the old writer had accepted but not committed is written
again. The upserts merge (``COALESCE`` of new and old), so writing a patch twice is
harmless, and no event falls into the gap between the two writers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from service.store.schema import EventPatch, ReviewPatch

MAX_HELD = 100_000
"""Patches held at most, whatever their age (a burst must not grow memory unbounded)."""


class Standby:
    """Recent patches, oldest first, dropped after ``keep_s`` seconds.

    Args:
        keep_s: How long a patch is held.
        clock: Wall clock (injected in tests).
    """

    def __init__(self, keep_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep_s = keep_s
        self._clock = clock
        self._held: deque[tuple[float, EventPatch | ReviewPatch]] = deque(maxlen=MAX_HELD)

    def hold(self, patch: EventPatch | ReviewPatch) -> None:
        """Keep ``patch``; forget those older than ``keep_s``."""
        now = self._clock()
        self._held.append((now, patch))
        cutoff = now - self.keep_s
        while self._held and self._held[0][0] < cutoff:
            self._held.popleft()

    def take(self) -> list[EventPatch | ReviewPatch]:
        """Everything held, oldest first; the standby is empty afterwards."""
        patches = [patch for _, patch in self._held]
        self._held.clear()
        return patches

    def __len__(self) -> int:
        return len(self._held)

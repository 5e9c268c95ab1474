"""Coalescing of streamed text deltas into a few MQTT messages.

A model streams a token every 10-50 ms; one MQTT message per token would be thousands
per answer. The first delta goes out at once (so the user sees the answer start), then
text is batched: a batch is sent when it holds ``max_chars`` characters (but not sooner
than ``min_interval_s`` after the previous one) or when its oldest character has waited
``max_delay_s``. An answer becomes tens of messages with no visible lag.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

Send = Callable[[str, str], Awaitable[None]]


class Coalescer:
    """Batches ``content`` and ``reasoning`` deltas; the caller drives time."""

    def __init__(
        self,
        send: Send,
        *,
        max_chars: int = 80,
        min_interval_s: float = 0.05,
        max_delay_s: float = 0.15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._max_chars = max_chars
        self._min_interval = min_interval_s
        self._max_delay = max_delay_s
        self._clock = clock
        self._kind: str | None = None
        self._buffer: list[str] = []
        self._size = 0
        self._oldest: float | None = None
        self._last_sent: float | None = None
        self.sent = 0

    def time_left(self) -> float | None:
        """Seconds until the buffer must be flushed; ``None`` when it is empty."""
        if self._oldest is None:
            return None
        return max(0.0, self._oldest + self._max_delay - self._clock())

    async def add(self, kind: str, text: str) -> None:
        """Buffer a delta of ``kind``; send whatever is due."""
        if not text:
            return
        if self._kind is not None and kind != self._kind:
            await self.flush()
        now = self._clock()
        self._kind = kind
        self._buffer.append(text)
        self._size += len(text)
        if self._oldest is None:
            self._oldest = now
        if self._last_sent is None:
            await self.flush()
            return
        since_last = now - self._last_sent
        full = self._size >= self._max_chars and since_last >= self._min_interval
        if full or now - self._oldest >= self._max_delay:
            await self.flush()

    async def flush(self) -> None:
        """Send the buffer now (no-op when empty)."""
        if not self._buffer or self._kind is None:
            return
        text, kind = "".join(self._buffer), self._kind
        self._buffer.clear()
        self._size = 0
        self._oldest = None
        self._last_sent = self._clock()
        self.sent += 1
        await self._send(kind, text)

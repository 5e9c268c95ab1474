"""Small helpers of the mirror: callback lists and message counters with quiet logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

LOG_EVERY_S = 60.0


class Counters:
    """Counts messages by kind; logs each kind of rejection at most once a minute.

    Args:
        clock: Wall clock (injected in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.values: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``key``."""
        self.values[key] = self.values.get(key, 0) + n

    def due(self, key: str) -> bool:
        """Whether a log line about ``key`` may go out now (then not again for a minute)."""
        now = self._clock()
        if now - self._last_logged.get(key, float("-inf")) < LOG_EVERY_S:
            return False
        self._last_logged[key] = now
        return True

    def reject(self, reason: str, topic: str, *, exc_info: bool = False) -> None:
        """Count a rejected message under ``rejected_<reason>`` and maybe log it."""
        key = f"rejected_{reason}"
        self.count(key)
        if self.due(key):
            log.warning(
                "frigate_message_rejected",
                reason=reason,
                topic=topic[:200],
                count=self.values[key],
                exc_info=exc_info,
            )


class Listeners(Generic[T]):
    """Callbacks called synchronously with each value; one that raises is reported, not fatal.

    Args:
        on_error: Called (inside an ``except``) when a callback raises.
    """

    def __init__(self, on_error: Callable[[], None]) -> None:
        self._callbacks: list[Callable[[T], None]] = []
        self._on_error = on_error

    def add(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Register ``callback``; returns a function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def emit(self, value: T) -> None:
        """Call every callback with ``value``."""
        for callback in list(self._callbacks):
            try:
                callback(value)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the mirror
                self._on_error()

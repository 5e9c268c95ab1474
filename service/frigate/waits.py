"""Waiting for a retained state topic to reach a value (confirming a command took effect).

A confirmation must be news: Frigate publishes a feature's state when it has handled a
``/set`` command and publishes nothing when it refuses one, so only a state message that
arrives after the command, live (not a retained copy the broker replays) and while
Frigate is online, confirms it. ``fresh_only`` waiters wait for exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

StatePredicate = Callable[[str], bool]


class StateWaiters:
    """Futures waiting for a state value, keyed by ``(camera, feature)``; event-driven."""

    def __init__(self) -> None:
        self._waiters: dict[
            tuple[str, str], list[tuple[StatePredicate, bool, asyncio.Future[str]]]
        ] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._waiters.values())

    async def wait(
        self,
        key: tuple[str, str],
        current: str | None,
        expected: str | StatePredicate,
        timeout: float,
        *,
        fresh_only: bool = False,
    ) -> str | None:
        """Wait until the value under ``key`` satisfies ``expected`` (a value or a predicate).

        Args:
            key: ``(camera, feature)``.
            current: The value now, checked first unless ``fresh_only``.
            expected: The exact value, or a predicate on it.
            timeout: Seconds to wait.
            fresh_only: Only a fresh message counts (see the module docstring).

        Returns:
            The matching value, or ``None`` on timeout.
        """
        predicate: StatePredicate = expected if callable(expected) else expected.__eq__
        if not fresh_only and current is not None and predicate(current):
            return current
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (predicate, fresh_only, future)
        waiters = self._waiters.setdefault(key, [])
        waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            waiters.remove(entry)
            if not waiters:
                self._waiters.pop(key, None)

    def notify(self, key: tuple[str, str], value: str, *, fresh: bool = True) -> None:
        """A new value arrived under ``key``: wake the waiters it satisfies."""
        for predicate, fresh_only, future in self._waiters.get(key, []):
            if not future.done() and (fresh or not fresh_only) and predicate(value):
                future.set_result(value)

"""Admission of requests: payload size, who may call, how often.

Checked before a request is journaled or run, so a flood costs a cheap error reply
and nothing else. Every refusal names the setting that caused it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from service.mqtt.envelope import ErrorCode, RequestError
from service.settings import Settings

MAX_TRACKED_USERS = 10_000


class TokenBucket:
    """``rate`` requests per minute, with bursts up to the same number."""

    __slots__ = ("capacity", "stamp", "tokens")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Admission:
    """Decides whether a request may go ahead."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, user: str, payload_size: int) -> RequestError | None:
        """The refusal for this request, or ``None`` to let it through."""
        limits = self._settings.limits
        if payload_size > limits.max_request_bytes:
            return RequestError(
                ErrorCode.INVALID_REQUEST,
                f"the payload is {payload_size} bytes; limits.max_request_bytes is "
                f"{limits.max_request_bytes}",
            )
        if user not in self._settings.users and not self._settings.auth.allow_unknown_users:
            return RequestError(
                ErrorCode.FORBIDDEN,
                f"user {user!r} is not listed under users and auth.allow_unknown_users is false",
            )
        rate = limits.requests_per_minute
        if rate and not self._bucket(user, rate).take(self._clock()):
            return RequestError(
                ErrorCode.RATE_LIMITED,
                f"more than {rate} requests a minute from {user!r} "
                "(limits.requests_per_minute); slow down",
            )
        return None

    def _bucket(self, user: str, rate: int) -> TokenBucket:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = TokenBucket(float(rate), self._clock())
            self._buckets[user] = bucket
            if len(self._buckets) > MAX_TRACKED_USERS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
        return bucket

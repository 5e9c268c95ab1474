"""The `health` request: version, uptime and the state of every link."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from service import __version__
from service.mqtt.envelope import Request
from service.mqtt.routes import RequestContext


class HealthRequest(Request):
    """`<prefix>/<user>/health`: only the envelope fields."""


class HealthReporter:
    """Collects the status of each component; components register a probe."""

    def __init__(self, started_at: float | None = None) -> None:
        self.started_at = time.time() if started_at is None else started_at
        self._probes: dict[str, Callable[[], dict[str, Any]]] = {}
        self._async_probes: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {}

    def register(self, name: str, probe: Callable[[], dict[str, Any]]) -> None:
        """Add a section to the health reply; ``probe`` must be cheap and never raise."""
        self._probes[name] = probe

    def register_async(self, name: str, probe: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Add a section whose probe asks something (the cluster's database); never raises."""
        self._async_probes[name] = probe

    def report(self) -> dict[str, Any]:
        """The body of a `done` reply."""
        body: dict[str, Any] = {
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 3),
        }
        for name, probe in self._probes.items():
            body[name] = probe()
        return body

    async def handle(self, _request: HealthRequest, ctx: RequestContext) -> None:
        """Answer a health request."""
        body = self.report()
        for name, probe in self._async_probes.items():
            body[name] = await probe()
        await ctx.reply.done(body)

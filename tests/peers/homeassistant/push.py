"""A stand-in for the companion app's push service, on 127.0.0.1.

Home Assistant's mobile_app notify platform POSTs every notification for a registered
device to the ``push_url`` the device gave at registration (the real apps give the
Home Assistant cloud's push relay). Registering a fake device whose ``push_url`` points
here makes ``notify.mobile_app_<device>`` a real notify action whose every call lands
in ``PushCapture.received``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.broker import free_port


@dataclass(frozen=True)
class Push:
    """One notification as Home Assistant sent it to the push service."""

    message: str
    title: str | None
    data: dict[str, Any] | None
    push_token: str
    registration_info: dict[str, Any]
    raw: dict[str, Any]


class PushCapture:
    """An aiohttp server that records every push and lets a test await them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Push] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    async def start(self) -> None:
        """Listen on 127.0.0.1 (once; later calls do nothing)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/push", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        push = Push(
            message=body.get("message", ""),
            title=body.get("title"),
            data=body.get("data"),
            push_token=body.get("push_token", ""),
            registration_info=body.get("registration_info", {}),
            raw=body,
        )
        async with self._changed:
            self.received.append(push)
            self._changed.notify_all()
        # mobile_app/notify.py reads the answer as JSON; 2xx without "rateLimits" is success.
        return web.json_response({})

    async def wait_for(
        self, predicate: Callable[[Push], bool] = lambda _: True, timeout: float = 30
    ) -> Push:
        """The first push received so far, or from now on, that satisfies ``predicate``."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for push in self.received:
                    if predicate(push):
                        return push
                await self._changed.wait()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

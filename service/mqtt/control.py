"""Calls between the workers of a cluster, over PostgreSQL ``LISTEN``/``NOTIFY``.

A request arrives at whichever worker the broker picked, but a cancel must reach the
worker that runs the request (or owns the watch). :class:`ClusterControl` sends a small
JSON call to one worker by id and waits for its answer; every worker listens on the
same channel and serves the calls addressed to it. A call to a worker that died goes
unanswered and returns ``None`` after its timeout: what that worker owned is being
taken over, and the caller decides what that means.

Broadcasts (``to`` null) tell every worker that something was handed over, so a
takeover starts at once instead of at the next scan.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from service.mqtt.journal import Journal
from service.mqtt.router import Dispatcher
from service.store import Lease

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ClusterControl:
    """Addressed calls and broadcasts among the workers (see the module docstring).

    Args:
        lease: This worker's lease (its id, and the notification channel).
        timeout_s: How long a call waits for the other worker's answer.
    """

    def __init__(self, lease: Lease, timeout_s: float) -> None:
        self.lease = lease
        self.timeout_s = timeout_s
        self._handlers: dict[str, Handler] = {}
        self._broadcasts: list[Callable[[dict[str, Any]], None]] = []
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        lease.subscribe(self._on_message)

    def on(self, op: str, handler: Handler) -> None:
        """Serve calls of ``op`` addressed to this worker with ``handler(args) -> result``."""
        self._handlers[op] = handler

    def on_broadcast(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback`` (quick, synchronous) with every broadcast, ours included."""
        self._broadcasts.append(callback)

    async def call(self, worker_id: int, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Ask worker ``worker_id`` to do ``op``; its result, or ``None`` without an answer."""
        ticket = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        message = {"op": op, "to": worker_id, "from": self.lease.worker_id, "ticket": ticket}
        try:
            await self.lease.notify(message | {"args": args})
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            log.warning("cluster_call_unanswered", op=op, worker_id=worker_id)
            return None
        finally:
            self._waiting.pop(ticket, None)

    async def broadcast(self, op: str, args: dict[str, Any] | None = None) -> None:
        """Tell every worker ``op`` (a hand-over, say); failures are logged, not raised."""
        try:
            await self.lease.notify(
                {"op": op, "to": None, "from": self.lease.worker_id} | {"args": args or {}}
            )
        except Exception:
            log.exception("cluster_broadcast_failed", op=op)

    def _on_message(self, message: dict[str, Any]) -> None:
        to = message.get("to")
        if to is None:
            for callback in list(self._broadcasts):
                callback(message)
            return
        if to != self.lease.worker_id:
            return
        if message.get("op") == "reply":
            future = self._waiting.get(str(message.get("ticket")))
            if future is not None and not future.done():
                future.set_result(dict(message.get("result") or {}))
            return
        handler = self._handlers.get(str(message.get("op")))
        if handler is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(handler, message), name=f"cluster-call:{message.get('op')}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, handler: Handler, message: dict[str, Any]) -> None:
        try:
            result = await handler(dict(message.get("args") or {}))
        except Exception:
            log.exception("cluster_call_failed", op=message.get("op"))
            result = {"error": "internal"}
        reply = {"op": "reply", "to": message.get("from"), "ticket": message.get("ticket")}
        try:
            await self.lease.notify(reply | {"result": result})
        except Exception:
            log.exception("cluster_reply_failed", op=message.get("op"))


def bind_cancels(control: ClusterControl, dispatcher: Dispatcher, journal: Journal) -> None:
    """Let a ``chat/cancel`` received by any worker stop the chat where it runs."""

    async def remote_cancel(user: str, request_id: str, kind: str) -> bool:
        owner = await journal.owner(user, request_id)
        if owner is None or owner[0] != kind or owner[1] in (None, control.lease.worker_id):
            return False
        result = await control.call(owner[1], "cancel", {"user": user, "id": request_id})
        return bool(result and result.get("found"))

    async def cancel_here(args: dict[str, Any]) -> dict[str, Any]:
        return {"found": dispatcher.cancel(str(args.get("user")), str(args.get("id")))}

    dispatcher.remote_cancel = remote_cancel
    control.on("cancel", cancel_here)

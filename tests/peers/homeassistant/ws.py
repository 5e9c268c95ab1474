"""A small client for Home Assistant's websocket API (aiohttp), for tests.

Commands get their result through a future keyed by message id; subscriptions
(``subscribe_events``, ``subscribe_trigger``, ``mqtt/subscribe`` …) get a queue of their
events that is registered before the command is sent, so no event can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import Callable
from typing import Any

import aiohttp


class HaCommandError(RuntimeError):
    """Home Assistant answered a websocket command with ``success: false``."""

    def __init__(self, command: dict[str, Any], error: dict[str, Any]) -> None:
        self.code = str(error.get("code"))
        self.error = error
        super().__init__(f"{command.get('type')}: {self.code}: {error.get('message')}")


class Subscription:
    """The events of one subscription, in arrival order.

    When its connection closes, waiting for its next event raises ``ConnectionError`` at
    once (it would never get one), so a caller can subscribe again rather than wait out
    its whole timeout.
    """

    def __init__(self, client: HaWebSocket, msg_id: int, queue: asyncio.Queue[Any]) -> None:
        self.id = msg_id
        self._client = client
        self._queue = queue

    async def _get(self) -> Any:
        event = await self._queue.get()
        if isinstance(event, ConnectionError):
            self._queue.put_nowait(event)  # every later wait raises it too
            raise event
        return event

    async def next(self, timeout: float = 30) -> Any:
        """The next event (the ``event`` member of Home Assistant's message)."""
        async with asyncio.timeout(timeout):
            return await self._get()

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 30) -> Any:
        """The first event (from now on, in order) that satisfies ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._get()
                if predicate(event):
                    return event

    async def unsubscribe(self) -> None:
        await self._client.unsubscribe(self.id)


class HaWebSocket:
    """One authenticated websocket connection to Home Assistant."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._url = url
        self._token = token
        self._ids = itertools.count(1)
        self._results: dict[int, asyncio.Future[Any]] = {}
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting = asyncio.Lock()
        self._closed = False
        self.drops = 0
        """How many times Home Assistant closed the connection under us."""

    async def connect(self, timeout: float = 30) -> None:
        self._queues.clear()  # a new connection: the old one's subscriptions are gone
        async with asyncio.timeout(timeout):
            self._ws = await self._session.ws_connect(self._url, max_msg_size=0)
            greeting = await self._ws.receive_json()
            if greeting.get("type") != "auth_required":
                raise RuntimeError(f"unexpected websocket greeting: {greeting}")
            await self._ws.send_json({"type": "auth", "access_token": self._token})
            answer = await self._ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise RuntimeError(f"websocket authentication failed: {answer}")
        self._reader = asyncio.create_task(self._read(), name="ha-websocket-reader")

    async def _read(self) -> None:
        ws = self._ws  # this connection's, whatever self._ws becomes meanwhile
        assert ws is not None
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            # Coalesced messages arrive as a list (a feature a client may opt into).
            for item in data if isinstance(data, list) else [data]:
                self._dispatch(item)
        closed = ConnectionError(
            f"Home Assistant closed the websocket (close code {ws.close_code}, "
            f"{ws.exception() or 'no error'})"
        )
        if not self._closed:
            self.drops += 1
            # In the test's output: a drop explains a wait that failed, and a net that
            # hides drops must not hide that they happen.
            print(f"ha websocket: {closed}; connecting again at the next command", file=sys.stderr)
        for future in self._results.values():
            if not future.done():
                future.set_exception(closed)
        for queue in self._queues.values():
            queue.put_nowait(closed)

    def _dispatch(self, item: dict[str, Any]) -> None:
        msg_id = item.get("id")
        if item.get("type") == "event" and msg_id in self._queues:
            self._queues[msg_id].put_nowait(item["event"])
        elif item.get("type") == "result" and msg_id in self._results:
            future = self._results.pop(msg_id)
            if not future.done():
                future.set_result(item)

    async def _connected(self) -> None:
        """Connect again if Home Assistant closed the connection in the meantime.

        It does when the client leaves its pings unanswered for about a minute: a test's
        synchronous fixture that waits minutes (the llama.cpp build on a fresh machine)
        stops the event loop that would answer them. A subscription of the closed
        connection raises ``ConnectionError`` (see ``Subscription``); a later command or
        subscription works.
        """
        async with self._reconnecting:
            if self._ws is not None and self._ws.closed and not self._closed:
                if self._reader is not None:
                    with contextlib.suppress(Exception):
                        await self._reader
                await self.connect()

    async def _send(self, msg_id: int, payload: dict[str, Any], timeout: float) -> Any:
        # No await between taking msg_id and writing the frame: ids reach Home Assistant
        # strictly increasing, which it requires (callers reconnect before taking one).
        if self._ws is None or self._ws.closed:
            raise ConnectionError("the websocket is not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[msg_id] = future
        command = {**payload, "id": msg_id}
        await self._ws.send_json(command)
        async with asyncio.timeout(timeout):
            answer = await future
        if not answer.get("success"):
            raise HaCommandError(command, answer.get("error") or {})
        return answer.get("result")

    async def command(self, payload: dict[str, Any], timeout: float = 30) -> Any:
        """Send one command and return its ``result``; raise HaCommandError on failure."""
        await self._connected()
        return await self._send(next(self._ids), payload, timeout)

    async def subscribe(self, payload: dict[str, Any], timeout: float = 30) -> Subscription:
        """Start a subscription; its events are queued from the moment it is sent."""
        await self._connected()
        msg_id = next(self._ids)
        # The queue exists before the command goes out: events may follow the result at once.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[msg_id] = queue
        try:
            await self._send(msg_id, payload, timeout)
        except BaseException:
            self._queues.pop(msg_id, None)
            raise
        return Subscription(self, msg_id, queue)

    async def unsubscribe(self, msg_id: int) -> None:
        # Not one of this connection's (it was made again since): nothing to end.
        if self._queues.pop(msg_id, None) is None:
            return
        if self._ws is not None and not self._ws.closed:
            # unsubscribe_events ends any subscription of this connection, not just events.
            await self.command({"type": "unsubscribe_events", "subscription": msg_id})

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

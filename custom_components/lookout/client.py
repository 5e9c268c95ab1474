"""lookout's MQTT API as Home Assistant's own MQTT integration reaches it.

Requests go to ``<prefix>/<user>/<kind>``; their replies come back on
``<prefix>/<user>/reply/<tag>/<id>`` (the payload's ``reply_to``), where ``<tag>`` is new
for every start of the integration. One subscription per lookout user in use,
``<prefix>/<user>/reply/<tag>/+``, lives as long as the integration and hands each reply
to its request by id.

Home Assistant sends SUBSCRIBE packets after a short cooldown and does not say when the
broker has acknowledged them. Before the first request of a user, the integration
publishes a probe to that user's reply topic and waits until it comes back through the
subscription: from then on no reply can be missed. Terminal replies are asked for
retained as well (``reply_retain``), so an answer that arrives while Home Assistant is
reconnecting to the broker is delivered when it resubscribes.

The retained ``<prefix>/status`` (online/offline) and ``<prefix>/tools`` (the tool list
in OpenAI's format) are followed for the whole lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError

from .const import CANCEL_TIMEOUT, PROBE_TIMEOUT

_LOGGER = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error"})
PROBE_PREFIX = "probe-"


class LookoutError(Exception):
    """A request that ended without an answer.

    ``code`` is lookout's error code (``llm_unavailable``, ``forbidden`` …) or one of
    the integration's own: ``offline`` (lookout said so), ``no_answer`` (nothing came
    within the timeout), ``mqtt`` (Home Assistant's MQTT could not carry the request).
    """

    def __init__(self, code: str, message: str) -> None:
        """Keep lookout's code and message."""
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class ClientStats:
    """Counters for diagnostics."""

    requests: int = 0
    replies: int = 0
    errors: int = 0
    no_answer: int = 0
    duplicates: int = 0
    unrouted: int = 0
    tools_updates: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Call:
    """One request in flight: its replies in ``seq`` order, the terminal one last."""

    def __init__(self, client: LookoutClient, user: str, kind: str, request_id: str) -> None:
        """Wait for the replies of ``request_id``."""
        self.client = client
        self.user = user
        self.kind = kind
        self.id = request_id
        self.terminal: dict[str, Any] | None = None
        self.cancel_sent = False
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._seen: set[int] = set()

    @callback
    def deliver(self, reply: dict[str, Any]) -> None:
        """Queue one reply; a second copy of a ``seq`` (QoS 1, a retained repeat) is dropped."""
        seq = reply.get("seq")
        if isinstance(seq, int):
            if seq in self._seen:
                self.client.stats.duplicates += 1
                return
            self._seen.add(seq)
        self._queue.put_nowait(reply)

    async def replies(self, idle_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Every reply until and with the terminal one.

        Raises ``LookoutError("no_answer")`` when lookout sends nothing for
        ``idle_timeout`` seconds (and asks lookout to stop a chat).
        """
        while self.terminal is None:
            try:
                async with asyncio.timeout(idle_timeout):
                    reply = await self._queue.get()
            except TimeoutError:
                self.client.stats.no_answer += 1
                if self.kind == "chat":
                    self.client.cancel_in_background(self)
                raise LookoutError(
                    "no_answer", f"lookout did not answer within {idle_timeout:g} seconds"
                ) from None
            if reply.get("type") in TERMINAL:
                self.terminal = reply
            yield reply

    async def result(self, timeout: float) -> dict[str, Any]:
        """The ``done`` reply; raises LookoutError for an ``error`` reply or no answer.

        For the requests this is used for (``tool``, ``health``) the terminal reply is
        the only one, so waiting ``timeout`` for the next reply is waiting for the answer.
        """
        try:
            async for _reply in self.replies(timeout):
                pass
        finally:
            self.client.forget(self)
        return raise_for_error(self.terminal)


def raise_for_error(reply: dict[str, Any] | None) -> dict[str, Any]:
    """The reply itself if it is ``done``; LookoutError with lookout's code otherwise."""
    if reply is None:
        raise LookoutError("no_answer", "lookout ended the request without an answer")
    if reply.get("type") == "error":
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {}
        raise LookoutError(
            str(error.get("code") or "internal"), str(error.get("message") or "no message")
        )
    return reply


@dataclass
class _Channel:
    """The reply subscription of one lookout user."""

    user: str
    topic: str
    unsubscribe: CALLBACK_TYPE
    ready: asyncio.Future[None]
    probe: str


class LookoutClient:
    """Requests to one lookout (one topic prefix) and their replies."""

    def __init__(self, hass: HomeAssistant, prefix: str) -> None:
        """Talk to the lookout at ``prefix``; nothing happens before ``async_start``."""
        self.hass = hass
        self.prefix = prefix
        self.tag = f"ha-{uuid.uuid4().hex[:12]}"
        self.status: str | None = None
        """lookout's retained status: ``online``, ``offline`` or None (not heard yet)."""
        self.tools: list[dict[str, Any]] = []
        """The tool definitions lookout retains on ``<prefix>/tools``."""
        self.tools_updated_at: float | None = None
        self.stats = ClientStats()
        self._calls: dict[str, Call] = {}
        self._channels: dict[str, _Channel] = {}
        self._probes: dict[str, _Channel] = {}
        self._unsubscribes: list[CALLBACK_TYPE] = []
        self._tools_listeners: list[Callable[[], None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = False

    # -- lifetime ------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Follow lookout's retained status and tool list."""
        for suffix, handler in (("status", self._on_status), ("tools", self._on_tools)):
            self._unsubscribes.append(
                await mqtt.async_subscribe(self.hass, f"{self.prefix}/{suffix}", handler, qos=1)
            )

    @callback
    def async_stop(self) -> None:
        """Unsubscribe everything; requests still waiting end with ``unavailable``."""
        self._stopped = True
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        for channel in list(self._channels.values()):
            self._drop_channel(channel)
        self._fail_calls("unavailable", "the integration was unloaded")
        self._calls.clear()

    @callback
    def add_tools_listener(self, listener: Callable[[], None]) -> CALLBACK_TYPE:
        """Call ``listener`` whenever lookout's tool list changes."""
        self._tools_listeners.append(listener)

        @callback
        def remove() -> None:
            self._tools_listeners.remove(listener)

        return remove

    # -- requests ------------------------------------------------------------------------

    def reply_topic(self, user: str, request_id: str) -> str:
        """Where lookout publishes the replies of one request."""
        return f"{self.prefix}/{user}/reply/{self.tag}/{request_id}"

    async def async_request(self, user: str, kind: str, body: dict[str, Any]) -> Call:
        """Publish one request as ``user``; its replies arrive on the returned Call."""
        if self._stopped:
            raise LookoutError("unavailable", "the integration is not loaded")
        await self._ensure_channel(user)
        # Checked after the channel is ready: a retained status, subscribed to before the
        # channel, has arrived by then (the broker handles Home Assistant's packets in order).
        if self.status == "offline":
            raise LookoutError("offline", f"lookout on '{self.prefix}' is offline")
        request_id = uuid.uuid4().hex
        call = Call(self, user, kind, request_id)
        self._calls[request_id] = call
        payload = {
            **body,
            "id": request_id,
            "reply_to": self.reply_topic(user, request_id),
            "reply_retain": True,
        }
        try:
            await self._publish(f"{self.prefix}/{user}/{kind}", payload)
        except LookoutError:
            self.forget(call)
            raise
        self.stats.requests += 1
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        return call

    async def async_call(
        self, user: str, kind: str, body: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """One request and its ``done`` reply (LookoutError for anything else)."""
        call = await self.async_request(user, kind, body)
        return await call.result(timeout)

    @callback
    def forget(self, call: Call) -> None:
        """Stop routing replies to ``call`` (a late one is then dropped)."""
        self._calls.pop(call.id, None)

    @callback
    def cancel_in_background(self, call: Call) -> None:
        """Ask lookout to stop a chat nobody waits for any more (best effort)."""
        self.forget(call)
        if self._stopped or call.terminal is not None or call.cancel_sent:
            return
        call.cancel_sent = True
        task = self.hass.async_create_background_task(
            self._cancel(call), f"lookout cancel {call.id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, call: Call) -> None:
        # The cancel's own reply (sent only when it fails, e.g. not_found) goes to a
        # topic this client routes, and is dropped there as unknown.
        body = {"id": call.id, "reply_to": self.reply_topic(call.user, f"cancel-{call.id}")}
        with contextlib.suppress(LookoutError, TimeoutError):
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self._publish(f"{self.prefix}/{call.user}/chat/cancel", body)

    async def _publish(
        self, topic: str, payload: dict[str, Any] | str, *, retain: bool = False
    ) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        try:
            await mqtt.async_publish(self.hass, topic, data, qos=1, retain=retain)
        except HomeAssistantError as err:
            message = f"Home Assistant could not publish to {topic}: {err}"
            raise LookoutError("mqtt", message) from err

    # -- reply subscriptions ---------------------------------------------------------------

    async def _ensure_channel(self, user: str) -> None:
        """Subscribe to ``user``'s replies once, and wait until the broker delivers them."""
        channel = self._channels.get(user)
        if channel is None:
            topic = f"{self.prefix}/{user}/reply/{self.tag}/+"
            unsubscribe = await mqtt.async_subscribe(self.hass, topic, self._on_reply, qos=1)
            probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
            channel = _Channel(user, topic, unsubscribe, self.hass.loop.create_future(), probe)
            self._channels[user] = channel
            self._probes[probe] = channel
            try:
                # Retained: Home Assistant sends the SUBSCRIBE a little later than this
                # PUBLISH, and the broker then hands the probe to the new subscription.
                await self._publish(self.reply_topic(user, probe), "probe", retain=True)
            except LookoutError:
                self._drop_channel(channel)
                raise
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await asyncio.shield(channel.ready)
        except TimeoutError:
            self._drop_channel(channel)
            raise LookoutError(
                "mqtt",
                f"Home Assistant's MQTT connection received nothing on {channel.topic}; "
                f"its broker login may not be allowed the topics of lookout user '{user}'",
            ) from None

    @callback
    def _clear_retained(self, topic: str) -> None:
        """Remove a retained probe from the broker (best effort, in the background)."""

        async def clear() -> None:
            with contextlib.suppress(LookoutError):
                await self._publish(topic, "", retain=True)

        task = self.hass.async_create_background_task(clear(), f"lookout clear {topic}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @callback
    def _drop_channel(self, channel: _Channel) -> None:
        if self._channels.get(channel.user) is channel:
            del self._channels[channel.user]
        if self._probes.pop(channel.probe, None) is not None:
            self._clear_retained(self.reply_topic(channel.user, channel.probe))
        channel.unsubscribe()
        if not channel.ready.done():
            channel.ready.cancel()

    @callback
    def _on_reply(self, message: mqtt.ReceiveMessage) -> None:
        request_id = message.topic.rsplit("/", 1)[-1]
        if request_id.startswith(PROBE_PREFIX):
            channel = self._probes.pop(request_id, None)
            if channel is not None and not channel.ready.done():
                channel.ready.set_result(None)
                self._clear_retained(message.topic)
            return
        call = self._calls.get(request_id)
        if call is None:
            # A retained answer of a request that is over, a cancel's reply.
            self.stats.unrouted += 1
            return
        try:
            reply = json.loads(message.payload)
        except ValueError:
            _LOGGER.debug("not JSON on %s: %.200s", message.topic, message.payload)
            return
        if not isinstance(reply, dict):
            return
        self.stats.replies += 1
        if reply.get("type") == "error":
            self.stats.errors += 1
        call.deliver(reply)

    # -- status and tools ----------------------------------------------------------------

    @callback
    def _on_status(self, message: mqtt.ReceiveMessage) -> None:
        payload = message.payload
        status = payload.decode() if isinstance(payload, bytes | bytearray) else str(payload)
        self.status = status.strip() or None
        if self.status == "offline":
            # Nobody should wait out the timeout for a lookout that is gone. (Home Assistant
            # may deliver the retained status of a new subscription after a probe, so the
            # check in async_request alone is not enough.)
            self._fail_calls("offline", f"lookout on '{self.prefix}' is offline")

    @callback
    def _fail_calls(self, code: str, message: str) -> None:
        """End every request in flight with a local error reply."""
        for call in list(self._calls.values()):
            error = {"code": code, "message": message}
            call.deliver({"id": call.id, "type": "error", "error": error})

    @callback
    def _on_tools(self, message: mqtt.ReceiveMessage) -> None:
        tools: list[dict[str, Any]] = []
        if message.payload:
            try:
                document = json.loads(message.payload)
            except ValueError:
                _LOGGER.warning("lookout's tool list on %s is not JSON", message.topic)
                document = {}
            listed = document.get("tools") if isinstance(document, dict) else None
            tools = [
                tool
                for tool in listed or []
                if isinstance(tool, dict)
                and isinstance(tool.get("function"), dict)
                and isinstance(tool["function"].get("name"), str)
            ]
        if tools == self.tools and self.tools_updated_at is not None:
            return
        self.tools = tools
        self.tools_updated_at = time.time()
        self.stats.tools_updates += 1
        for listener in list(self._tools_listeners):
            listener()

"""A request client for the command line: publish one request, stream its replies.

It uses the same :class:`~service.mqtt.bus.MqttBus` as the worker (so aiomqtt stays behind
one module), without a persistent session or an availability status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from service.mqtt import TERMINAL_TYPES, BusUnavailableError, MqttBus, TopicMap
from service.settings import Settings


class RequestTimeoutError(Exception):
    """No terminal reply arrived in time."""


class BrokerUnreachableError(RequestTimeoutError):
    """The broker did not accept a connection in time."""


@contextlib.asynccontextmanager
async def _bus(
    settings: Settings, subscriptions: list[tuple[str, int]], timeout: float
) -> AsyncIterator[MqttBus]:
    """A connected, non-persistent bus for one command (``BusAuthError`` passes through)."""
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    mqtt = settings.mqtt.model_copy(update={"client_id": f"lookout-cli-{uuid.uuid4().hex[:8]}"})
    bus = MqttBus(mqtt, topics, subscriptions, announce=False, persistent=False)
    runner = asyncio.create_task(bus.run(), name="cli-bus")
    connected = asyncio.create_task(bus.wait_connected(), name="cli-connected")
    try:
        await asyncio.wait(
            [runner, connected], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if runner.done():
            runner.result()  # raises BusAuthError with the broker's reason
        if not connected.done():
            raise BrokerUnreachableError(
                f"cannot reach the broker at {settings.mqtt.host}:{settings.mqtt.port} "
                f"within {timeout:g} s"
            )
        yield bus
    finally:
        for task in (connected, runner):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def call(
    settings: Settings,
    user: str,
    kind: str,
    body: dict[str, Any],
    *,
    on_reply: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send one request as ``user`` and return its terminal reply.

    Args:
        settings: Broker settings (the worker's own config file works).
        user: The caller name in the request topic.
        kind: ``health``, ``chat``, ``chat/cancel``, ``tool`` or ``watch``.
        body: The request payload; an ``id`` is added when missing.
        on_reply: Called with every reply as it arrives, the terminal one included.
        timeout: Seconds to wait for the broker and the terminal reply together.

    Raises:
        RequestTimeoutError: Nothing terminal arrived within ``timeout``
            (:class:`BrokerUnreachableError` when the broker itself did not answer).
        BusAuthError: The broker refused the credentials.
    """
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    body = {**body, "id": body.get("id") or uuid.uuid4().hex[:16]}
    reply_topic = topics.default_reply(user, body["id"])
    request_topic = f"{topics.prefix}/{user}/{kind}"
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with (
            _bus(settings, [(reply_topic, 1)], timeout) as bus,
            asyncio.timeout_at(deadline),
        ):
            await bus.publish(request_topic, json.dumps(body).encode(), qos=1)
            async for message in bus.messages():
                message.ack()
                reply = json.loads(message.payload)
                if reply.get("id") != body["id"]:
                    continue
                if on_reply is not None:
                    on_reply(reply)
                if reply.get("type") in TERMINAL_TYPES:
                    return dict(reply)
    except (TimeoutError, BusUnavailableError):
        raise RequestTimeoutError(
            f"no reply from lookout on {settings.mqtt.host}:{settings.mqtt.port} "
            f"within {timeout:g} s (is it running with topic_prefix {topics.prefix!r}?)"
        ) from None
    raise RequestTimeoutError("the reply stream ended")  # pragma: no cover - messages() is endless


async def send(
    settings: Settings, user: str, kind: str, body: dict[str, Any], *, timeout: float = 5.0
) -> None:
    """Publish one request without waiting for a reply (``chat/cancel`` on Ctrl-C).

    Raises:
        RequestTimeoutError: The broker did not take it within ``timeout``.
    """
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with _bus(settings, [], timeout) as bus, asyncio.timeout_at(deadline):
            await bus.publish(f"{topics.prefix}/{user}/{kind}", json.dumps(body).encode(), qos=1)
    except (TimeoutError, BusUnavailableError):
        raise RequestTimeoutError("the broker did not take the message") from None


async def read_retained(settings: Settings, topic: str, *, timeout: float = 5.0) -> bytes | None:
    """The retained message on ``topic``, or ``None`` when there is none.

    The broker sends retained messages as it accepts the subscription; a message of our
    own, published after the subscription, marks the point where any retained message
    has arrived, so "none" is known without waiting out a timer.

    Raises:
        RequestTimeoutError: The broker did not answer within ``timeout``.
    """
    marker = f"{settings.mqtt.topic_prefix}/cli/marker/{uuid.uuid4().hex[:12]}"
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with (
            _bus(settings, [(topic, 1), (marker, 1)], timeout) as bus,
            asyncio.timeout_at(deadline),
        ):
            await bus.publish(marker, b"", qos=1)
            async for message in bus.messages():
                message.ack()
                if message.topic == marker:
                    return None
                if message.topic == topic and message.payload:
                    return message.payload
    except (TimeoutError, BusUnavailableError):
        raise RequestTimeoutError(
            f"the broker at {settings.mqtt.host}:{settings.mqtt.port} did not answer "
            f"within {timeout:g} s"
        ) from None
    return None  # pragma: no cover - messages() is endless

"""A request client for the command line: publish one request, stream its replies.

It uses the same :class:`~service.bus.MqttBus` as the worker (so aiomqtt stays behind
one module), without a persistent session or an availability status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from service.bus import BusUnavailableError, MqttBus
from service.envelope import TERMINAL_TYPES
from service.settings import Settings
from service.topics import TopicMap


class RequestTimeoutError(Exception):
    """No terminal reply arrived in time."""


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
        RequestTimeoutError: Nothing terminal arrived within ``timeout``.
    """
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    body = {**body, "id": body.get("id") or uuid.uuid4().hex[:16]}
    reply_topic = topics.default_reply(user, body["id"])
    mqtt = settings.mqtt.model_copy(update={"client_id": f"lookout-cli-{uuid.uuid4().hex[:8]}"})
    bus = MqttBus(mqtt, topics, [(reply_topic, 1)], announce=False, persistent=False)
    request_topic = f"{topics.prefix}/{user}/{kind}"
    runner = asyncio.create_task(bus.run(), name="cli-bus")
    try:
        async with asyncio.timeout(timeout):
            connected = asyncio.create_task(bus.wait_connected(), name="cli-connected")
            await asyncio.wait([runner, connected], return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                connected.cancel()
                runner.result()  # raises BusAuthError with the broker's reason
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
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
    raise RequestTimeoutError("the reply stream ended")  # pragma: no cover - messages() is endless

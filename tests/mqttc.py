"""A small MQTT test client (aiomqtt) that talks to lookout the way users do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttTestClient:
    """Subscribe first, then publish, then wait for what arrives (never sleep)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: int = 5,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ):
        self._client = aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5 if protocol == 5 else aiomqtt.ProtocolVersion.V311,
            socket_options=NODELAY,
        )
        self._client.pending_calls_threshold = 100_000
        self.protocol = protocol
        self._queues: list[tuple[str, asyncio.Queue[Received]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttTestClient:
        await self._client.__aenter__()
        self._reader = asyncio.create_task(self._read(), name="test-client-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self._client.messages:
            props = m.properties
            corr = getattr(props, "CorrelationData", None) if props is not None else None
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            rec = Received(m.topic.value, payload, bool(m.retain), corr)
            for topic_filter, queue in self._queues:
                if m.topic.matches(topic_filter):
                    queue.put_nowait(rec)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> asyncio.Queue[Received]:
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._queues.append((topic_filter, queue))
        await self._client.subscribe(topic_filter, qos=qos)
        return queue

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        if isinstance(payload, dict | list):
            payload = json.dumps(payload).encode()
        props = None
        if response_topic or correlation_data:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
        await self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)


async def next_message(queue: asyncio.Queue[Received], timeout: float = 10.0) -> Received:
    async with asyncio.timeout(timeout):
        return await queue.get()


async def until_terminal(
    queue: asyncio.Queue[Received], request_id: str | None = None, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Collect replies (of one request id, if given) up to and including `done`/`error`."""
    replies: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await queue.get()
            body = msg.json()
            if request_id is not None and body.get("id") != request_id:
                continue
            replies.append(body)
            if body.get("type") in ("done", "error"):
                return replies


async def request(
    client: MqttTestClient,
    prefix: str,
    user: str,
    kind: str,
    body: dict[str, Any],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Publish a request with an id and collect its replies on the default reply topic."""
    body = dict(body)
    body.setdefault("id", uuid.uuid4().hex[:12])
    queue = await client.subscribe(f"{prefix}/{user}/reply/{body['id']}")
    await client.publish(f"{prefix}/{user}/{kind}", body)
    return await until_terminal(queue, body["id"], timeout)

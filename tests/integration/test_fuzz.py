"""Property-based fuzzing of every inbound topic through the real route table.

Random and malformed payloads (bytes, unicode, deep JSON, huge numbers, wrong types) go
to every topic lookout subscribes to. The worker must not crash, memory must stay
bounded, and every request-shaped message must get exactly one terminal reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import build
from service.mqtt.bus import Message
from service.settings import load_settings

USER = "fuzz"

REQUEST_TOPICS = [
    f"lk/{USER}/{kind}" for kind in ("health", "chat", "chat/cancel", "tool", "watch")
]
OTHER_TOPICS = [
    "fr/events",
    "fr/reviews",
    "fr/tracked_object_update",
    "fr/available",
    "fr/profile/state",
    "fr/front_door/detect/state",
    "fr/front_door/zone/porch/state",
    "fr/front_door/person/snapshot",
    "lk/camera/front_door/frame",
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
known_keys = st.sampled_from(
    ["id", "reply_to", "text", "messages", "tool_name", "arguments", "action", "camera",
     "condition", "type", "after", "before", "stream", "max_tool_iterations", "job_id"]
)  # fmt: skip
shaped = st.dictionaries(known_keys, json_value, max_size=6)


def deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_value.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=100, max_value=50_000).map(deep),
    st.just(b"\xff\xd8\xff garbage jpeg"),
    st.just(b"x" * 300_000),
)
messages = st.lists(
    st.tuples(st.sampled_from(REQUEST_TOPICS + OTHER_TOPICS), payloads, st.booleans()),
    min_size=1,
    max_size=25,
)


def unique_id(payload: bytes, n: int) -> bytes:
    """Give a JSON object payload a fresh id, so repeats are not duplicates of each other."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        body["id"] = f"f{n}"
        return json.dumps(body).encode()
    return payload


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.sent.append((topic, payload))


async def run_batch(batch: list[tuple[str, bytes, bool]]) -> tuple[int, dict[str, int]]:
    cfg = load_settings(
        environ={
            "LOOKOUT_MQTT__TOPIC_PREFIX": "lk",
            "LOOKOUT_FRIGATE__TOPIC_PREFIX": "fr",
            "LOOKOUT_STORE__URL": "sqlite:///:memory:",
        }
    )
    runtime = await build(cfg)
    recorder = RecordingPublisher()
    runtime.dispatcher._publisher = recorder  # observe replies without a broker
    inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def feed() -> AsyncIterator[Message]:
        while True:
            yield await inbox.get()

    acks = 0
    all_acked = asyncio.Event()

    def ack() -> None:
        nonlocal acks
        acks += 1
        if acks == len(batch):
            all_acked.set()

    requests = 0
    for n, (topic, raw, retain) in enumerate(batch):
        payload = raw
        if topic in REQUEST_TOPICS:
            requests += 1
            payload = unique_id(raw, n)
        inbox.put_nowait(Message(topic, payload, qos=1, retain=retain, _ack=ack))
    await runtime.events.start()
    async with asyncio.TaskGroup() as tg:
        writer = tg.create_task(runtime.events.run())
        watches = tg.create_task(runtime.watches.run()) if runtime.watches else None
        dispatch = tg.create_task(runtime.dispatcher.run(feed()))
        async with asyncio.timeout(30):
            await all_acked.wait()
            await runtime.dispatcher.wait_idle()
        dispatch.cancel()
        if watches is not None:
            watches.cancel()
        await runtime.events.close()
        writer.cancel()
    await runtime.engine.dispose()
    terminals: dict[str, int] = {}
    for topic, payload in recorder.sent:
        with contextlib.suppress(ValueError):
            body = json.loads(payload)
            if isinstance(body, dict) and body.get("type") in ("done", "error"):
                terminals[f"{topic}|{body['id']}"] = terminals.get(f"{topic}|{body['id']}", 0) + 1
    return requests, terminals


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=messages)
def test_every_inbound_topic_survives_garbage(batch: list[tuple[str, bytes, bool]]) -> None:
    tracemalloc.start()
    try:
        requests, terminals = asyncio.run(run_batch(batch))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Ids were made unique, so every request-shaped message is its own request.
    assert all(count == 1 for count in terminals.values()), terminals
    assert sum(terminals.values()) == requests
    assert peak < 200 * 1024 * 1024

"""A realistic Frigate session replayed over a real broker into the real worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from tests.e2e.helpers import health, tool
from tests.frigate_replay import build_session, tracked_object
from tests.mqttc import MqttTestClient, request

pytestmark = pytest.mark.e2e


async def wait_stored(
    mqtt: MqttTestClient, prefix: str, rows: int, timeout: float = 30.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            h = await health(mqtt, prefix)
            if h["store"]["rows_written"] >= rows and h["store"]["pending"] == 0:
                return h
            await asyncio.sleep(0.1)  # re-ask cadence; health is the only window into the writer


@pytest.fixture
def names() -> tuple[str, str]:
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    return prefix, f"{prefix}fr"


async def test_replay_yields_cameras_zones_objects_history_and_frames(
    broker, worker_factory, mqtt, names
):
    prefix, fp = names
    worker = worker_factory(
        broker,
        prefix=prefix,
        config={
            "frigate": {
                "topic_prefix": fp,
                "cameras": {"front_door": {"friendly_name": "Front Door"}},
            },
            "users": {"admin": {"role": "admin"}},
        },
    )
    worker.start()
    await worker.wait_online(mqtt)
    session = build_session(time.time() - 900, fp)
    for topic, payload, retain in session.messages:
        await mqtt.publish(topic, payload, qos=1, retain=retain)
    await wait_stored(mqtt, prefix, len(session.ids))

    h = await health(mqtt, prefix)
    assert set(h["frigate"]["cameras"]) == {"front_door", "driveway", "backyard"}
    assert h["frigate"]["available"] == "online"

    # History with GenAI description, face and plate.
    people = await tool(mqtt, prefix, "search_objects", label="person")
    alice = next(o for o in people["objects"] if o["id"] == session.ids["alice"])
    assert alice["sub_label"].lower() == "alice"
    assert alice.get("description")
    by_zone = await tool(mqtt, prefix, "search_objects", zones=["Porch"])
    assert {o["id"] for o in by_zone["objects"]} >= {session.ids["alice"]}
    cars = await tool(mqtt, prefix, "search_objects", camera="driveway", label="car")
    assert cars["objects"] and cars["objects"][0].get("plate")
    named = await tool(mqtt, prefix, "search_objects", camera="Front Door")
    assert all(o["camera"] == "front_door" for o in named["objects"])

    # Live objects per camera, as Frigate still tracks them at the end of the session.
    for camera, still in session.live_at_end.items():
        live = await tool(mqtt, prefix, "get_live_context", camera=camera)
        assert len(live["objects"]) == len(still), (camera, live)

    # Reviews for the recap, with GenAI's title.
    recap = await tool(mqtt, prefix, "get_recap", after="2000-01-01", before="2100-01-01")
    assert recap["alerts"] + recap["detections"] >= len(session.reviews)
    assert any(item.get("title") for item in recap["items"])

    # Feature states and the profile.
    profile = await tool(mqtt, prefix, "get_profile_status")
    assert profile["active_profile"] == "away"

    # Snapshots became (fallback) frames.
    assert h["frames"]["received"] >= 1


async def test_a_burst_of_10000_events_is_stored_whole_while_health_stays_prompt(
    broker, worker_factory, mqtt, names
):
    prefix, fp = names
    worker = worker_factory(
        broker,
        prefix=prefix,
        config={"frigate": {"topic_prefix": fp}, "limits": {"requests_per_minute": 0}},
    )
    worker.start()
    await worker.wait_online(mqtt)
    t0 = time.time() - 3600
    burst = 10_000

    async def publish_burst() -> None:
        for n in range(burst):
            obj = tracked_object(
                f"{t0 + n:.6f}-{n:06x}",
                "street",
                "car",
                t0 + n,
                t0 + n,
                current=["road"],
                entered=["road"],
            )
            await mqtt.publish(
                f"{fp}/events",
                json.dumps({"type": "new", "before": obj, "after": obj}).encode(),
                qos=0,
            )

    publisher = asyncio.create_task(publish_burst())
    # Health requests interleaved with the burst still come back.
    answered = 0
    while not publisher.done():
        reply = await request(mqtt, prefix, "probe", "health", {}, timeout=10)
        assert reply[-1]["type"] == "done"
        answered += 1
    await publisher
    assert answered >= 1
    h = await wait_stored(mqtt, prefix, burst, timeout=60)
    assert h["store"]["rows_written"] >= burst

    # And it survives a restart.
    worker.stop()
    worker.start()
    await worker.wait_online(mqtt)
    found = await request(
        mqtt, prefix, "probe", "tool",
        {"tool_name": "search_objects", "arguments": {"camera": "street", "limit": 100}},
    )  # fmt: skip
    assert found[-1]["type"] == "done", found[-1]
    assert found[-1]["result"]["count"] == 100

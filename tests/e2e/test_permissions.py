"""A viewer limited to one camera never sees or touches another, by any path."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.test_chat import provider, wait_events_stored
from tests.fake_llm import FakeLLM, text, tool_calls
from tests.frigate_replay import build_session
from tests.mqttc import request

pytestmark = pytest.mark.e2e

ALLOWED = "backyard"
OTHERS = {"front_door", "driveway"}

# (tool, arguments) a curious viewer (or a model steered by one) might try.
ATTEMPTS: list[tuple[str, dict[str, Any]]] = [
    ("search_objects", {}),
    ("search_objects", {"camera": "front_door"}),
    ("search_objects", {"camera": "Front Door"}),
    ("search_objects", {"zones": ["porch"]}),
    ("search_objects", {"sub_label": "alice"}),
    ("get_live_context", {"camera": "front_door"}),
    ("get_live_context", {"camera": "*"}),
    ("get_recap", {"after": "2000-01-01", "before": "2100-01-01"}),
    (
        "get_recap",
        {"after": "2000-01-01", "before": "2100-01-01", "cameras": "front_door,backyard"},
    ),
    ("set_camera_state", {"camera": "front_door", "feature": "detect", "value": "OFF"}),
    ("set_camera_state", {"camera": "*", "feature": "detect", "value": "OFF"}),
    ("start_camera_watch", {"camera": "front_door", "condition": "someone at the door"}),
]


def cameras_in(value: Any) -> set[str]:
    """Every camera id a result exposes, wherever it sits."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("camera", "cameras", "available_cameras"):
                items = item if isinstance(item, list | dict) else [item]
                found |= {str(i) for i in items}
            found |= cameras_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= cameras_in(item)
    return found


@pytest.fixture
async def viewer_world(broker, worker_factory, mqtt):
    async with FakeLLM() as fake:
        prefix = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{prefix}fr"
        worker = worker_factory(
            broker,
            prefix=prefix,
            config={
                "llm": provider(fake),
                "frigate": {"topic_prefix": fp, "confirm_timeout_s": 0.5},
                "users": {"kid": {"role": "viewer", "cameras": [ALLOWED]}},
            },
        )
        worker.start()
        await worker.wait_online(mqtt)
        for topic, payload, retain in build_session(time.time() - 600, fp).messages:
            await mqtt.publish(topic, payload, qos=1, retain=retain)
        await wait_events_stored(mqtt, prefix, 3)
        commands = await mqtt.subscribe(f"{fp}/+/+/set")
        yield worker, fake, commands


@pytest.mark.parametrize(("tool", "arguments"), ATTEMPTS)
async def test_direct_execution_stays_on_the_allowed_camera(viewer_world, mqtt, tool, arguments):
    worker, _, commands = viewer_world
    out = (
        await request(
            mqtt, worker.prefix, "kid", "tool", {"tool_name": tool, "arguments": arguments}
        )
    )[-1]
    if out["type"] == "done":
        assert cameras_in(out["result"]) <= {ALLOWED}, out
    else:
        assert out["error"]["code"] in (
            "not_found",
            "forbidden",
            "invalid_request",
            "unavailable",
        ), out
        assert cameras_in(out["error"].get("details", {})) <= {ALLOWED}, out
    assert commands.empty()


async def test_the_chat_loop_cannot_be_steered_to_another_camera(viewer_world, mqtt):
    worker, fake, commands = viewer_world
    fake.push(tool_calls(ATTEMPTS, style="openai"), text("Here is what I may tell you."))
    replies = await request(
        mqtt, worker.prefix, "kid", "chat", {"text": "show me everything"}, timeout=30
    )
    assert replies[-1]["type"] == "done", replies[-1]
    results = [r for r in replies if r["type"] == "tool_result"]
    assert len(results) == len(ATTEMPTS)
    for r in results:
        assert cameras_in(r["result"]) <= {ALLOWED}, r
    # The system prompt lists only the allowed camera.
    [first, *_] = await fake.wait_for_requests(1)
    system = first.messages[0]["content"]
    assert ALLOWED in system
    assert not any(other in system for other in OTHERS)
    assert commands.empty()

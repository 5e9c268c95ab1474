"""Home Assistant discovery and the bridge over a real broker, answered by a real lookout.

The worker is the real `lookout run` with the fake LLM. Until the composition root runs
the bridge itself (``Settings.homeassistant`` exists), the bridge under test runs in this
process on a bus of its own, subscribed exactly as the worker would route it; after that
the tests use the worker's own bridge, configured through the YAML file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.homeassistant.bridge import HomeAssistantBridge
from service.homeassistant.discovery import HaTopics
from service.mqtt.bus import MqttBus
from service.mqtt.topics import TopicMap
from service.settings import HomeAssistantSettings, MqttSettings, Settings
from tests import ha_schema
from tests.fake_llm import FakeLLM, error, text, tool_calls
from tests.frigate_replay import SNAPSHOT_JPEG, build_session
from tests.mqttc import MqttTestClient, next_message, request

pytestmark = pytest.mark.integration

WIRED = "homeassistant" in Settings.model_fields
"""Whether `lookout run` runs the bridge itself (the lead's wiring has landed)."""


@dataclass
class Ha:
    prefix: str
    frigate_prefix: str
    settings: HomeAssistantSettings
    topics: HaTopics
    fake: FakeLLM | None


@contextlib.asynccontextmanager
async def standalone_bridge(broker, prefix: str, fp: str, ha: HomeAssistantSettings):
    """The bridge on its own bus: the dispatcher's routing reduced to its subscriptions."""
    topics = TopicMap(prefix, fp)
    bridge = HomeAssistantBridge(ha, topics)
    mqtt = MqttSettings(host=broker.host, port=broker.port, topic_prefix=prefix,
                        client_id=f"habridge-{uuid.uuid4().hex[:8]}")  # fmt: skip
    bus = MqttBus(mqtt, topics, bridge.subscriptions(), announce=False, persistent=False)

    async def pump() -> None:
        async for message in bus.messages():
            bridge.handle(message)
            message.ack()

    tasks = [
        asyncio.create_task(bus.run(), name="ha-test-bus"),
        asyncio.create_task(pump(), name="ha-test-pump"),
        asyncio.create_task(bridge.run(bus), name="ha-test-bridge"),
    ]
    try:
        # Subscribed before connected counts (as the worker subscribes before `online`).
        await bus.wait_connected(10)
        yield bridge
    finally:
        # The bridge first, while its bus is still connected (as the worker's shutdown
        # stops side tasks before the bus).
        for task in reversed(tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def ha(broker, worker_factory, mqtt) -> AsyncIterator[Ha]:
    """A lookout with the fake LLM and a Home Assistant bridge on a discovery prefix of its own."""
    prefix, dp = f"lk{uuid.uuid4().hex[:8]}", f"ha{uuid.uuid4().hex[:8]}"
    fp = f"{prefix}fr"
    settings = HomeAssistantSettings(discovery_prefix=dp, llm_check_interval_s=0)
    async with FakeLLM() as fake:
        config: dict[str, Any] = {
            "llm": {"providers": {"fake": {"base_url": fake.base_url, "api_key": "sk-x",
                                           "model": "fake-model", "max_retries": 0,
                                           "timeout_s": 5}}},
            "frigate": {"topic_prefix": fp},
        }  # fmt: skip
        if WIRED:
            config["homeassistant"] = settings.model_dump(exclude_defaults=True)
        worker = worker_factory(broker, prefix=prefix, config=config)
        worker.start()
        await worker.wait_online(mqtt)
        topics = HaTopics.build(settings, TopicMap(prefix, fp))
        if WIRED:
            yield Ha(prefix, fp, settings, topics, fake)
        else:
            async with standalone_bridge(broker, prefix, fp, settings):
                yield Ha(prefix, fp, settings, topics, fake)


async def test_every_discovery_payload_is_valid_for_home_assistant(ha: Ha, mqtt: MqttTestClient):
    configs = await mqtt.subscribe(ha.topics.config)
    message = await next_message(configs)
    document = message.json()
    assert ha_schema.problems(message.topic, document) == []
    assert message.topic == f"{ha.settings.discovery_prefix}/device/{ha.prefix}/config"
    assert document["dev"]["identifiers"] == [ha.prefix] and document["dev"]["name"] == "lookout"
    components = document["cmps"]
    assert {c["p"] for c in components.values()} == {
        "text", "notify", "sensor", "event", "image", "button", "binary_sensor",
    }  # fmt: skip
    uids = [c["unique_id"] for c in components.values()]
    assert len(set(uids)) == len(uids) and all(u.startswith(f"{ha.prefix}_") for u in uids)
    status = f"{ha.prefix}/status"
    for key, config in components.items():
        if key != "broker_connection":
            assert config["availability"][0]["topic"] == status, key
    # The availability topic really carries lookout's status, and the Frigate sensor reads
    # the bridge's copy of Frigate's availability: OFF, as no Frigate has said anything.
    available = await next_message(await mqtt.subscribe(status))
    assert available.payload == b"online" and available.retain
    assert components["frigate"]["state_topic"] == ha.topics.frigate
    frigate = await next_message(await mqtt.subscribe(ha.topics.frigate))
    assert frigate.payload == b"OFF"


async def test_a_text_entity_command_is_answered_on_the_sensor_topics(ha: Ha, mqtt: MqttTestClient):
    assert ha.fake is not None
    long_answer = "Alice came to the front door at noon and left a parcel on the porch. " * 5
    ha.fake.push(tool_calls([("search_objects", {"label": "person"})]), text(long_answer))
    states = await mqtt.subscribe(ha.topics.answer)
    attributes = await mqtt.subscribe(ha.topics.answer_attributes)
    llm = await mqtt.subscribe(ha.topics.llm)
    # What Home Assistant's text entity publishes: the bare text, QoS 1, not retained.
    await mqtt.publish(ha.topics.ask, b"Who came by today?", qos=1)
    state = (await next_message(states, 30)).payload.decode()
    attrs = (await next_message(attributes, 5)).json()
    assert ha_schema.state_ok(state) and state.endswith("…")
    assert long_answer.strip().startswith(state[:-1].strip())
    assert attrs["answer"] == long_answer and attrs["question"] == "Who came by today?"
    assert [c["name"] for c in attrs["tool_calls"]] == ["search_objects"]
    assert attrs["tool_calls"][0]["arguments"] == {"label": "person"}
    assert attrs["conversation_id"] and attrs["error"] is None
    assert (await next_message(llm, 10)).payload == b"ON"
    question = await next_message(await mqtt.subscribe(ha.topics.question))
    assert question.payload == b"Who came by today?" and question.retain
    # The model got the question as a user message in lookout's real chat path.
    reqs = await ha.fake.wait_for_requests(2)
    assert any("Who came by today?" in str(m.get("content")) for m in reqs[0].messages)

    # The next question continues the conversation.
    ha.fake.push(text("Nobody else."))
    await mqtt.publish(ha.topics.ask, b"Anyone else?", qos=1)
    assert (await next_message(states, 30)).payload == b"Nobody else."
    follow_up = (await next_message(attributes, 5)).json()
    assert follow_up["conversation_id"] == attrs["conversation_id"]
    reqs = await ha.fake.wait_for_requests(3)
    assert any("Who came by today?" in str(m.get("content")) for m in reqs[2].messages)


async def test_an_llm_failure_is_shown_and_turns_the_llm_sensor_off(ha: Ha, mqtt: MqttTestClient):
    assert ha.fake is not None
    ha.fake.push(error(401, "bad key"))
    states = await mqtt.subscribe(ha.topics.answer)
    await mqtt.publish(ha.topics.ask, b"hello", qos=1)
    assert (await next_message(states, 30)).payload.decode().startswith("Error: ")
    llm = await mqtt.subscribe(ha.topics.llm)
    assert (await next_message(llm, 5)).payload == b"OFF"


async def test_home_assistant_online_gets_discovery_again(ha: Ha, mqtt: MqttTestClient):
    configs = await mqtt.subscribe(ha.topics.config)
    first = await next_message(configs)
    await mqtt.publish(ha.topics.ha_status, b"online", qos=1)
    again = await next_message(configs)
    assert not again.retain  # published live in answer to the birth message
    assert again.json() == first.json()


async def test_a_watch_alert_fires_the_event_and_shows_the_snapshot(ha: Ha, mqtt: MqttTestClient):
    events = await mqtt.subscribe(ha.topics.alert_event)
    images = await mqtt.subscribe(ha.topics.snapshot)
    await next_message(await mqtt.subscribe(ha.topics.config))  # the bridge is up
    alert = {"job_id": "j1", "camera": "front_door", "condition": "a parcel is delivered",
             "message": "A parcel was left on the porch.", "reasoning": "A box by the door.",
             "status": "success", "end_reason": "condition_met", "time": 1795486508.1}  # fmt: skip
    await mqtt.publish(f"{ha.prefix}/alice/watch/j1/snapshot", SNAPSHOT_JPEG, qos=1, retain=True)
    await mqtt.publish(f"{ha.prefix}/alice/watch/j1/alert", alert, qos=1)
    image = await next_message(images)
    assert image.payload == SNAPSHOT_JPEG
    event = (await next_message(events)).json()
    assert event == {"event_type": "condition_met", "user": "alice", **alert}
    # The latest snapshot stays for Home Assistant's next start.
    kept = await next_message(await mqtt.subscribe(ha.topics.snapshot))
    assert kept.retain and kept.payload == SNAPSHOT_JPEG


async def test_active_watches_and_the_cancel_all_button(ha: Ha, mqtt: MqttTestClient):
    assert ha.fake is not None
    verdict = {"condition_met": False, "next_run_in": 300, "reasoning": "Nothing yet.",
               "notification_message": ""}  # fmt: skip
    ha.fake.set_responder(lambda _request: text(json.dumps(verdict)))
    for topic, payload, retain in build_session(time.time() - 600, ha.frigate_prefix).messages:
        await mqtt.publish(topic, payload, qos=1, retain=retain)
    counts = await mqtt.subscribe(ha.topics.watches)

    async def start(user: str, camera: str, condition: str) -> str:
        async with asyncio.timeout(20):
            while True:  # until lookout has heard of the camera from the replay
                reply = (await request(mqtt, ha.prefix, user, "watch",
                                       {"action": "start", "camera": camera,
                                        "condition": condition}))[-1]  # fmt: skip
                if reply["type"] == "done":
                    return str(reply["job_id"])
                assert reply["error"]["code"] == "not_found", reply
                await asyncio.sleep(0.1)  # re-ask cadence, not synchronisation

    async def count_reaches(n: int) -> None:
        async with asyncio.timeout(20):
            while (await next_message(counts, 20)).payload != str(n).encode():
                pass

    mine = [await start("homeassistant", "front_door", "a parcel arrives"),
            await start("homeassistant", "driveway", "a car parks")]  # fmt: skip
    theirs = await start("alice", "backyard", "the dog is at the gate")
    # Counted from the retained job states of every user.
    await count_reaches(3)
    attrs = (await next_message(await mqtt.subscribe(ha.topics.watches_attributes))).json()
    assert sorted((w["user"], w["camera"]) for w in attrs["watches"]) == [
        ("alice", "backyard"), ("homeassistant", "driveway"), ("homeassistant", "front_door")
    ]  # fmt: skip

    # The button cancels every watch Home Assistant's user may cancel: its own.
    await mqtt.publish(ha.topics.cancel_watches, b"PRESS", qos=1)
    await count_reaches(1)
    listed = (await request(mqtt, ha.prefix, "homeassistant", "watch", {"action": "list"}))[-1]
    assert {j["job_id"]: j["status"] for j in listed["jobs"]} == dict.fromkeys(mine, "cancelled")
    alice = (await request(mqtt, ha.prefix, "alice", "watch", {"action": "list"}))[-1]
    assert [(j["job_id"], j["status"] != "cancelled") for j in alice["jobs"]] == [(theirs, True)]


async def test_discovery_switched_off_removes_the_device(broker, mqtt: MqttTestClient):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    on = HomeAssistantSettings(discovery_prefix=f"ha{uuid.uuid4().hex[:8]}", llm_check_interval_s=0)
    topics = HaTopics.build(on, TopicMap(prefix, "frigate"))
    configs = await mqtt.subscribe(topics.config)
    async with standalone_bridge(broker, prefix, "frigate", on):
        assert (await next_message(configs)).json()["cmps"]
    off = on.model_copy(update={"discovery": False})
    async with standalone_bridge(broker, prefix, "frigate", off):
        removal = await next_message(configs)
    assert removal.payload == b""
    # Nothing is retained any more: a new subscriber (Home Assistant starting) gets
    # only the marker published after its subscription.
    async with MqttTestClient(broker.host, broker.port) as fresh:
        queue = await fresh.subscribe(topics.config)
        marker = await fresh.subscribe(f"{prefix}/marker")
        await fresh.publish(f"{prefix}/marker", b"m", qos=1)
        await next_message(marker)
        assert queue.empty()

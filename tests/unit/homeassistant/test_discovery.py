"""The Home Assistant discovery document and settings (pure, no sockets)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from service.homeassistant.discovery import (
    STATE_MAX,
    HaTopics,
    HomeAssistantSettings,
    clip_state,
    device_config,
    encode,
    node_id,
)
from service.mqtt.topics import TopicMap
from tests import ha_schema


def build(**settings):
    ha = HomeAssistantSettings(**settings)
    topics = TopicMap("lookout", "frigate")
    ha_topics = HaTopics.build(ha, topics)
    return ha, topics, ha_topics, device_config(ha, topics, ha_topics, "1.2.3")


def test_the_document_passes_home_assistants_rules():
    _, _, ha_topics, doc = build()
    assert ha_schema.problems(ha_topics.config, json.loads(encode(doc))) == []


def test_the_checker_catches_what_home_assistant_would_reject():
    *_, doc = build()
    broken = json.loads(encode(doc))
    broken["cmps"]["answer"]["state_topc"] = "x"  # typo
    del broken["cmps"]["question"]["command_topic"]
    broken["cmps"]["llm"]["unique_id"] = broken["cmps"]["frigate"]["unique_id"]
    broken["cmps"]["alert_snapshot"]["url_topic"] = "a/b"
    broken["cmps"]["ask"]["command_topic"] = "lookout/+/ask"
    del broken["dev"]["identifiers"]
    found = "\n".join(ha_schema.problems("homeassistant/device/look out/config", broken))
    for expected in (
        "not <prefix>/device/<object_id>/config",
        "unknown key 'state_topc'",
        "cmps.question: missing required 'command_topic'",
        "also used by",
        "exactly one of image_topic and url_topic",
        "command_topic 'lookout/+/ask' is not a valid topic",
        "dev.identifiers",
    ):
        assert expected in found, found


def test_one_device_with_the_household_entities():
    _, topics, t, doc = build()
    assert t.config == "homeassistant/device/lookout/config"
    assert doc["dev"]["identifiers"] == ["lookout"] and doc["dev"]["sw_version"] == "1.2.3"
    assert doc["o"] == {"name": "lookout", "sw_version": "1.2.3"}
    platforms = {key: c["p"] for key, c in doc["cmps"].items()}
    assert platforms == {
        "question": "text",
        "ask": "notify",
        "answer": "sensor",
        "watch_alert": "event",
        "alert_snapshot": "image",
        "active_watches": "sensor",
        "cancel_all_watches": "button",
        "broker_connection": "binary_sensor",
        "frigate": "binary_sensor",
        "llm": "binary_sensor",
    }
    cmps = doc["cmps"]
    # Both ways of asking land on the one topic the bridge reads.
    assert cmps["question"]["command_topic"] == cmps["ask"]["command_topic"] == t.ask
    assert cmps["answer"]["state_topic"] == t.answer
    assert cmps["answer"]["json_attributes_topic"] == t.answer_attributes
    # Frigate's availability as the bridge republishes it: OFF until Frigate says online.
    assert cmps["frigate"]["state_topic"] == t.frigate == "lookout/homeassistant/ha/frigate"
    assert (cmps["frigate"]["payload_on"], cmps["frigate"]["payload_off"]) == ("ON", "OFF")
    assert cmps["broker_connection"]["state_topic"] == topics.status == "lookout/status"
    assert cmps["alert_snapshot"]["image_topic"] == t.snapshot
    assert cmps["watch_alert"]["event_types"] == [
        "condition_met", "timeout", "error", "cancelled", "alert"
    ]  # fmt: skip
    for key, config in cmps.items():
        assert config["unique_id"] == f"lookout_{key}"
        # Each release reads the key it knows (object_id up to 2025.9, default_entity_id from
        # 2025.10, where it wins over object_id); both name the same entity id.
        assert config["object_id"] == f"lookout_{key}"
        assert config["default_entity_id"] == f"{config['p']}.lookout_{key}"
        if key == "broker_connection":
            # Its state is lookout's availability: it reads "disconnected", never unavailable.
            assert "availability" not in config
        else:
            assert config["availability"] == [
                {"topic": "lookout/status", "payload_available": "online",
                 "payload_not_available": "offline"}
            ]  # fmt: skip


def test_topics_follow_the_configured_prefixes():
    ha = HomeAssistantSettings(discovery_prefix="ha-test/", user="house")
    topics = TopicMap("home/lookout", "nvr")
    t = HaTopics.build(ha, topics)
    assert node_id(ha, topics) == "home_lookout"
    dashed = device_config(
        ha, TopicMap("My-Lookout"), HaTopics.build(ha, TopicMap("My-Lookout")), "0"
    )
    assert dashed["cmps"]["answer"]["default_entity_id"] == "sensor.my_lookout_answer"
    assert dashed["cmps"]["answer"]["object_id"] == "my_lookout_answer"
    assert dashed["cmps"]["answer"]["unique_id"] == "My-Lookout_answer"
    assert t.config == "ha-test/device/home_lookout/config"
    assert t.ha_status == "ha-test/status"
    assert t.ask == "home/lookout/house/ha/ask"
    assert t.chat_request == "home/lookout/house/chat"
    doc = device_config(ha, topics, t, "0")
    assert doc["cmps"]["frigate"]["state_topic"] == t.frigate == "home/lookout/house/ha/frigate"
    assert ha_schema.problems(t.config, doc) == []
    # None of the bridge's topics can be taken for a request or a watch topic.
    for topic in (
        t.ask,
        t.question,
        t.answer,
        t.replies,
        t.alert_event,
        t.snapshot,
        t.watches,
        t.frigate,
    ):
        assert topics.request_kind(topic) is None
        assert topics.watch_state.match(topic) is None
        assert topics.watch_alert.match(topic) is None


def test_explicit_node_id_and_status_topic():
    ha = HomeAssistantSettings(node_id="garage", status_topic="hass/status")
    t = HaTopics.build(ha, TopicMap())
    assert t.config == "homeassistant/device/garage/config" and t.ha_status == "hass/status"


@pytest.mark.parametrize(
    "bad",
    [
        {"user": "tools"},  # reserved
        {"user": "two words"},
        {"node_id": "a/b"},
        {"discovery_prefix": "home/#"},
        {"bogus": 1},
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        HomeAssistantSettings(**bad)


def test_states_are_cut_to_what_home_assistant_stores():
    assert clip_state("short\n answer ") == "short answer"
    long = "word " * 200
    clipped = clip_state(long)
    assert len(clipped) == STATE_MAX and clipped.endswith("…")
    assert ha_schema.state_ok(clipped) and not ha_schema.state_ok(long)

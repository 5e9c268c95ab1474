"""The examples agree with lookout: topics, payload fields and entity ids they rely on.

The Node-RED flow runs for real in ``tests/e2e/test_nodered.py``, the one-liners in
``tests/e2e/test_oneliners.py`` and the Home Assistant package and blueprint in
``tests/peers/homeassistant/`` (a real Home Assistant); here they are checked against what
lookout actually accepts and publishes, quickly and without Home Assistant.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from service.chat.requests import ChatRequest
from service.homeassistant.discovery import (
    ALERT_EVENT_TYPES,
    HaTopics,
    HomeAssistantSettings,
    device_config,
)
from service.mqtt.topics import TopicMap
from service.watch.requests import WatchRequest
from tests.broker import REPO

EXAMPLES = REPO / "examples"
PACKAGE = EXAMPLES / "homeassistant" / "lookout_package.yaml"
BLUEPRINT = EXAMPLES / "homeassistant" / "blueprints" / "script" / "lookout" / "tell_me_when.yaml"
FLOWS = EXAMPLES / "node-red" / "flows.json"


class _HaLoader(yaml.SafeLoader):
    """YAML as Home Assistant reads it: ``!input`` (blueprints) and ``!include…`` tags."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return {"__tag__": node.tag, "value": loader.construct_scalar(node)}  # type: ignore[arg-type]


for _tag in ("!input", "!include_dir_named", "!secret"):
    _HaLoader.add_constructor(_tag, _tagged)


def load(path) -> Any:
    return yaml.load(path.read_text(), Loader=_HaLoader)  # noqa: S506 - a SafeLoader subclass


def payload_keys(template: str) -> set[str]:
    """The keys of the dict literal a payload template serialises with to_json."""
    return set(re.findall(r"'(\w+)':", template))


def steps(sequence: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [s for s in sequence if key in s]


def default_entity_ids() -> set[str]:
    ha = HomeAssistantSettings()
    topics = TopicMap()
    doc = device_config(ha, topics, HaTopics.build(ha, topics), "0")
    return {c["default_entity_id"] for c in doc["cmps"].values()}


def test_the_ask_script_sends_a_chat_request_and_waits_on_its_reply_topic():
    script = load(PACKAGE)["script"]["lookout_ask"]
    (publish,) = steps(script["sequence"], "action")
    assert publish["action"] == "mqtt.publish"
    topics = TopicMap()
    assert topics.request_kind(publish["data"]["topic"]) == ("chat", "homeassistant")
    assert publish["data"]["qos"] == 1
    keys = payload_keys(publish["data"]["payload"])
    assert keys == {"id", "text", "stream", "conversation_id", "reply_retain"}
    assert keys <= set(ChatRequest.model_fields)
    # The wait subscribes after the publish: the answer must stay retained for it.
    assert "'reply_retain': true" in publish["data"]["payload"]
    (variables, *_) = steps(script["sequence"], "variables")
    reply = variables["variables"]["reply_topic"].replace("{{ request_id }}", "ha123")
    assert reply == topics.default_reply("homeassistant", "ha123")
    (wait,) = steps(script["sequence"], "wait_for_trigger")
    assert wait["wait_for_trigger"][0] == {"trigger": "mqtt", "topic": "{{ reply_topic }}"}
    assert steps(script["sequence"], "stop")[0]["response_variable"] == "result"


def test_the_automation_uses_entities_discovery_creates():
    package = load(PACKAGE)
    (automation,) = package["automation"]
    used = set(
        re.findall(r"\b(?:event|image|sensor|text|button)\.lookout_\w+", json.dumps(automation))
    )
    assert used and used <= default_entity_ids()
    assert "'condition_met'" in json.dumps(automation) and "condition_met" in ALERT_EVENT_TYPES
    # The example caller reads what lookout_ask returns.
    caller = package["script"]["lookout_announce_answer"]
    assert caller["sequence"][0]["action"] == "script.lookout_ask"


def test_the_blueprint_starts_a_watch_and_waits_for_its_end():
    blueprint = load(BLUEPRINT)
    assert blueprint["blueprint"]["domain"] == "script"
    inputs = blueprint["blueprint"]["input"]
    used_inputs = set(re.findall(r"'__tag__': '!input', 'value': '(\w+)'", str(blueprint)))
    assert used_inputs == set(inputs)
    assert inputs["snapshot"]["default"] in default_entity_ids()
    sequence = blueprint["sequence"]
    (publish,) = [s for s in sequence if s.get("action") == "mqtt.publish"]
    assert publish["data"]["topic"] == "{{ prefix }}/{{ user }}/watch"
    keys = payload_keys(publish["data"]["payload"])
    assert keys == {
        "id", "action", "camera", "condition", "max_duration_minutes", "labels", "reply_retain"
    }  # fmt: skip
    assert keys <= set(WatchRequest.model_fields)
    assert "'reply_retain': true" in publish["data"]["payload"]
    waits = [s["wait_for_trigger"][0]["topic"] for s in steps(sequence, "wait_for_trigger")]
    fill = {"{{ prefix }}": "lookout", "{{ user }}": "homeassistant", "{{ request_id }}": "r1",
            "{{ job_id }}": "j1"}  # fmt: skip
    concrete = []
    for template in waits:
        topic = template
        for var, value in fill.items():
            topic = topic.replace(var, value)
        concrete.append(topic)
    topics = TopicMap()
    assert concrete[0] == topics.default_reply("homeassistant", "r1")
    # The end is read from the watch's retained state (the alert is not retained).
    assert topics.watch_state.match(concrete[1]) == {"user": "homeassistant", "job_id": "j1"}


def test_the_node_red_flow_is_wired_and_configured_in_one_place():
    flows = json.loads(FLOWS.read_text())
    by_id = {n["id"]: n for n in flows}
    assert len(by_id) == len(flows)
    (tab,) = [n for n in flows if n["type"] == "tab"]
    (broker,) = [n for n in flows if n["type"] == "mqtt-broker"]
    assert broker["protocolVersion"] == "5"  # Response Topic and Correlation Data need MQTT 5
    defined = {v["name"] for v in tab["env"]}
    for node in flows:
        for outputs in node.get("wires", []):
            assert all(target in by_id for target in outputs), node["id"]
        if node["type"] in ("mqtt in", "mqtt out"):
            assert node["broker"] == broker["id"]
        if node["type"] == "mqtt in":
            assert re.fullmatch(r"\$\{(\w+)\}", node["topic"])[1] in defined
        if node["type"] == "function":
            assert set(re.findall(r'env\.get\("(\w+)"\)', node["func"])) <= defined
    request = next(n for n in flows if n["type"] == "function" and "responseTopic" in n["func"])
    assert "correlationData: Buffer.from(id)" in request["func"]
    literal = re.search(r"const body = \{([^}]*)\}", request["func"])
    assert literal, request["func"]
    keys = {part.split(":")[0].strip() for part in literal[1].split(",")}
    keys |= set(re.findall(r"body\.(\w+) =", request["func"]))
    assert keys == {"id", "text", "stream", "conversation_id"} <= set(ChatRequest.model_fields)
    env = {v["name"]: v["value"] for v in tab["env"]}
    assert TopicMap().watch_alert.filter == env["ALERT_TOPIC"]


def test_the_walk_through_names_real_entities():
    text = (EXAMPLES / "README.md").read_text()
    named = set(
        re.findall(
            r"`((?:text|notify|sensor|event|image|button|binary_sensor)\.lookout_\w+)`", text
        )
    )
    assert named == default_entity_ids()

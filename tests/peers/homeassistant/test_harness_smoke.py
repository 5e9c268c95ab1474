"""The Home Assistant harness itself: start, onboarding, MQTT, a phone, logs, config check.

The order matters only for the last test, which reads the whole log of the session's
Home Assistant after the others have driven it.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import paho.mqtt.publish
import pytest

from tests.broker import Broker
from tests.peers.homeassistant.harness import HomeAssistant

# The session fixture may install Home Assistant first (about a minute, more on a slow
# network), then start and onboard it: more than the project's 120 s per test.
pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(900),
    pytest.mark.store_independent,  # the harness alone: no lookout
]


async def test_started_onboarded_with_a_long_lived_token(homeassistant: HomeAssistant) -> None:
    steps = await homeassistant.api("GET", "/api/onboarding", auth=False)
    assert steps and all(step["done"] for step in steps), steps
    assert await homeassistant.api("GET", "/api/") == {"message": "API running."}
    config = await homeassistant.ws.command({"type": "get_config"})
    assert config["state"] == "RUNNING"
    assert config["version"] == homeassistant.release
    tokens = await homeassistant.ws.command({"type": "auth/refresh_tokens"})
    assert any(t["type"] == "long_lived_access_token" for t in tokens)


async def test_the_websocket_connects_again_after_home_assistant_closed_it(
    homeassistant: HomeAssistant,
) -> None:
    # As Home Assistant does when a fixture has kept the loop from answering its pings.
    states = await homeassistant.ws.subscribe({"type": "subscribe_events"})
    await homeassistant.ws._ws.close()  # type: ignore[union-attr]
    config = await homeassistant.ws.command({"type": "get_config"})
    assert config["state"] == "RUNNING"
    await states.unsubscribe()  # the old connection's: nothing to end, and no error


async def test_a_subscription_of_a_closed_websocket_fails_at_once(
    homeassistant: HomeAssistant,
) -> None:
    states = await homeassistant.ws.subscribe({"type": "subscribe_events"})
    await homeassistant.ws._ws.close()  # type: ignore[union-attr]
    # At once: not the 60 s timeout that a subscription nobody feeds would wait out.
    with pytest.raises(ConnectionError, match="closed the websocket"):
        await states.next(timeout=60)
    with pytest.raises(ConnectionError):  # and again, for any later wait
        await states.wait_for(lambda _e: True, timeout=60)
    await states.unsubscribe()


async def test_a_wait_for_a_state_outlives_a_dropped_websocket(
    homeassistant: HomeAssistant,
) -> None:
    entity = f"sensor.harness_{uuid.uuid4().hex[:8]}"
    await homeassistant.api("POST", f"/api/states/{entity}", {"state": "before"})
    tasks: list[asyncio.Task[None]] = []

    async def drop_then_change() -> None:
        await homeassistant.ws._ws.close()  # type: ignore[union-attr]
        await homeassistant.api("POST", f"/api/states/{entity}", {"state": "after"})

    def after(state: dict[str, object] | None) -> bool:
        # The first look (subscribed, state read): drop the connection under the wait,
        # then change the state, whose event the dropped subscription never gets.
        if not tasks:
            tasks.append(asyncio.create_task(drop_then_change()))
        return state is not None and state["state"] == "after"

    drops = homeassistant.ws.drops
    state = await homeassistant.wait_for_state(entity, after, timeout=60)
    assert state is not None and state["state"] == "after"
    await tasks[0]
    assert homeassistant.ws.drops == drops + 1


async def test_mqtt_entry_is_loaded_on_the_test_broker(
    homeassistant: HomeAssistant, ha_broker: Broker
) -> None:
    entries = await homeassistant.api("GET", "/api/config/config_entries/entry?domain=mqtt")
    assert [(e["title"], e["state"]) for e in entries] == [(ha_broker.host, "loaded")]


async def test_mqtt_message_runs_an_automation_that_notifies_the_phone(
    homeassistant: HomeAssistant, ha_broker: Broker
) -> None:
    topic = f"lookout-tests/{uuid.uuid4().hex[:8]}/in"
    homeassistant.add_file(
        "packages/smoke.yaml",
        f"""
automation:
  - id: harness_smoke
    alias: harness smoke
    triggers:
      - trigger: mqtt
        topic: {topic}
    actions:
      - action: {homeassistant.phone}
        data:
          title: "{{{{ trigger.payload_json.camera }}}}"
          message: "{{{{ trigger.payload_json.text }}}}"
          data:
            tag: "{{{{ trigger.payload_json.id }}}}"
""",
    )
    await homeassistant.reload("automation")
    await homeassistant.mqtt_barrier()
    payload = {"id": "r1", "camera": "front_door", "text": "a parcel is on the porch"}
    await asyncio.to_thread(
        paho.mqtt.publish.single, topic, json.dumps(payload), qos=1,
        hostname=ha_broker.host, port=ha_broker.port,
    )  # fmt: skip
    push = await homeassistant.push.wait_for(lambda p: p.data == {"tag": "r1"})
    assert (push.title, push.message) == ("front_door", "a parcel is on the porch")
    assert push.registration_info["app_id"] == "io.lookout.tests"


async def test_an_event_runs_an_automation_and_wait_for_state_sees_it(
    homeassistant: HomeAssistant,
) -> None:
    homeassistant.add_file(
        "packages/state.yaml",
        """
input_boolean:
  harness_flag:
    name: harness flag
automation:
  - id: harness_event
    alias: harness event
    triggers:
      - trigger: event
        event_type: harness_ping
    actions:
      - action: input_boolean.turn_on
        target:
          entity_id: input_boolean.harness_flag
""",
    )
    await homeassistant.reload("input_boolean", "automation")
    await homeassistant.wait_for_state("input_boolean.harness_flag", lambda s: s is not None)
    await homeassistant.fire_event("harness_ping", {"n": 1})
    state = await homeassistant.wait_for_state(
        "input_boolean.harness_flag", lambda s: s is not None and s["state"] == "on"
    )
    assert state is not None and state["attributes"]["friendly_name"] == "harness flag"


async def test_a_script_blueprint_from_the_config_dir_notifies_the_phone(
    homeassistant: HomeAssistant,
) -> None:
    homeassistant.add_file(
        "blueprints/script/harness/notify.yaml",
        """
blueprint:
  name: harness notify
  domain: script
  input:
    notify_action:
      name: Notify action
      selector:
        text:
    prefix:
      name: Prefix
      default: bp
      selector:
        text:
fields:
  message:
    required: true
    selector:
      text:
variables:
  prefix: !input prefix
sequence:
  - action: !input notify_action
    data:
      message: "{{ prefix }}: {{ message }}"
""",
    )
    homeassistant.add_file(
        "packages/blueprint.yaml",
        f"""
script:
  harness_blueprint:
    use_blueprint:
      path: harness/notify.yaml
      input:
        notify_action: {homeassistant.phone}
""",
    )
    await homeassistant.reload("script")
    await homeassistant.call_service("script", "harness_blueprint", {"message": "hello"})
    push = await homeassistant.push.wait_for(lambda p: p.message == "bp: hello")
    assert push.title is None


async def test_check_config_passes(homeassistant: HomeAssistant) -> None:
    result = await homeassistant.check_config()
    assert result.ok, result.output


async def test_the_log_has_no_errors_or_warnings(homeassistant: HomeAssistant) -> None:
    assert homeassistant.log_lines(), "Home Assistant wrote no log"
    assert homeassistant.errors_and_warnings() == []

"""lookout's device as the real Home Assistant builds it from lookout's discovery document."""

from __future__ import annotations

import pytest

from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import Lookout

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

ENTITIES = {
    "text.lookout_question", "notify.lookout_ask", "sensor.lookout_answer",
    "event.lookout_watch_alert", "image.lookout_alert_snapshot",
    "sensor.lookout_active_watches", "button.lookout_cancel_all_watches",
    "binary_sensor.lookout_broker_connection", "binary_sensor.lookout_frigate",
    "binary_sensor.lookout_llm",
}  # fmt: skip
FRIGATE = "binary_sensor.lookout_frigate"


async def device_entities(ha: HomeAssistant, identifier: str) -> set[str]:
    devices = await ha.ws.command({"type": "config/device_registry/list"})
    (device,) = [d for d in devices if ["mqtt", identifier] in d["identifiers"]]
    entities = await ha.ws.command({"type": "config/entity_registry/list"})
    return {e["entity_id"] for e in entities if e["device_id"] == device["id"]}


async def test_the_device_has_the_ten_entities_the_readme_names(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    assert await device_entities(homeassistant, "lookout") == ENTITIES
    for entity_id in ENTITIES:
        state = await homeassistant.get_state(entity_id)
        assert state is not None and state["state"] != "unavailable", entity_id


async def test_entity_ids_follow_the_node_id_whatever_the_device_is_called(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    # A second device of the same lookout, named so that Home Assistant's own naming
    # would give other entity ids ("text.front_office_question").
    await lookout.start(
        homeassistant, homeassistant={"node_id": "lookout_office", "device_name": "Front office"}
    )
    try:
        await homeassistant.wait_for_state(
            "binary_sensor.lookout_office_broker_connection",
            lambda s: s is not None and s["state"] == "on",
        )
        named = await device_entities(homeassistant, "lookout_office")
        assert named == {e.replace(".lookout_", ".lookout_office_") for e in ENTITIES}
    finally:
        # The device goes again: the empty retained config lookout publishes when off.
        await lookout.start(
            homeassistant, homeassistant={"node_id": "lookout_office", "discovery": False}
        )
        await homeassistant.wait_for_state(
            "binary_sensor.lookout_office_broker_connection", lambda s: s is None
        )


async def test_the_frigate_sensor_is_off_until_frigate_says_online(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await lookout.publish("frigate/available", b"", retain=True)  # no Frigate on this broker
    # A fresh device (removed, then announced again): its entities start with no state.
    await lookout.start(homeassistant, homeassistant={"discovery": False})
    await homeassistant.wait_for_state(FRIGATE, lambda s: s is None)
    await lookout.start(homeassistant)
    await homeassistant.wait_for_state(FRIGATE, lambda s: s is not None and s["state"] == "off")
    # Frigate comes up (its retained availability) before lookout starts: on at once.
    await lookout.publish("frigate/available", b"online", retain=True)
    await lookout.start(homeassistant)
    await homeassistant.wait_for_state(FRIGATE, lambda s: s is not None and s["state"] == "on")
    # Frigate's graceful stop says "stopped": off, and no warning about the payload.
    await lookout.publish("frigate/available", b"stopped", retain=True)
    await lookout.start(homeassistant)
    await homeassistant.wait_for_state(FRIGATE, lambda s: s is not None and s["state"] == "off")
    await lookout.publish("frigate/available", b"", retain=True)


async def test_the_frigate_sensor_follows_frigate_while_lookout_runs(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await lookout.publish("frigate/available", b"", retain=True)
    await lookout.start(homeassistant)
    await homeassistant.wait_for_state(FRIGATE, lambda s: s is not None and s["state"] == "off")
    try:
        await lookout.publish("frigate/available", b"online", retain=True)
        await homeassistant.wait_for_state(
            FRIGATE, lambda s: s is not None and s["state"] == "on", timeout=5
        )
        await lookout.publish("frigate/available", b"offline", retain=True)
        await homeassistant.wait_for_state(
            FRIGATE, lambda s: s is not None and s["state"] == "off", timeout=5
        )
    finally:
        await lookout.publish("frigate/available", b"", retain=True)

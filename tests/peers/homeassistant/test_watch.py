"""Watches from Home Assistant: the blueprint's notification tells the truth for every way a
watch ends, and the package's and the README's alert automations push what happened.

The phone is the harness's captured ``mobile_app`` push target. Each test names its watch
with a condition of its own, so it recognises its own notifications. The watch that runs
out of time is started first (by the module's ``timeout_run``) and checked last: watches
last at least a minute, and the other tests run meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from tests.mqttc import MqttTestClient, Received
from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import (
    BLUE,
    BLUEPRINT_SCRIPT,
    PREFIX,
    RED,
    USER,
    Lookout,
    _is_red,
)
from tests.peers.homeassistant.push import Push

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

MET_MESSAGE = "The parcel is on the porch."
"""The fake model's notification message when the frame is red."""
SNAPSHOT = "image.lookout_alert_snapshot"
PACKAGE_AUTOMATION = "lookout_watch_alert_to_phone"
README_AUTOMATIONS = ("readme_watch_alert", "readme_any_alert")
IN_A_ROW = 5


def condition(what: str = "a parcel is on the porch") -> str:
    """A condition no other test uses, so that its notifications are told apart."""
    return f"{what} ({uuid.uuid4().hex[:6]})"


async def set_automations(ha: HomeAssistant, enabled: set[str]) -> None:
    """Switch the examples' alert automations on (these config ids) or off (the others)."""
    for state in await ha.api("GET", "/api/states"):
        config_id = state["attributes"].get("id")
        if state["entity_id"].startswith("automation.") and config_id in {
            PACKAGE_AUTOMATION,
            *README_AUTOMATIONS,
        }:
            on = config_id in enabled
            if (state["state"] == "on") != on:
                await ha.call_service(
                    "automation", "turn_on" if on else "turn_off",
                    target={"entity_id": state["entity_id"]},
                )  # fmt: skip


@contextlib.asynccontextmanager
async def watch_states(lookout: Lookout) -> AsyncIterator[asyncio.Queue[Received]]:
    """The retained states of Home Assistant's watches, from now on (and those retained)."""
    async with MqttTestClient(lookout.broker.host, lookout.broker.port) as client:
        yield await client.subscribe(f"{PREFIX}/{USER}/watch/+")


async def job_where(
    states: asyncio.Queue[Received],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 15,
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await states.get()
            if message.payload:
                job = message.json()
                if predicate(job):
                    return job  # type: ignore[no-any-return]


async def run_blueprint(ha: HomeAssistant, camera: str, what: str, **fields: Any) -> None:
    """Start the script made from the blueprint, as a dashboard button does (it runs on)."""
    await ha.call_service(
        "script", "turn_on",
        {"variables": {"camera": camera, "condition": what, **fields}},
        target={"entity_id": f"script.{BLUEPRINT_SCRIPT}"},
    )  # fmt: skip


def titled(title: str) -> Callable[[Push], bool]:
    return lambda push: push.title == title


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def timeout_run(homeassistant: HomeAssistant, lookout_service: Lookout) -> dict[str, Any]:
    """A blueprint watch of one minute on a camera whose frames never meet the condition."""
    await lookout_service.ensure(homeassistant)
    what = condition("a van is in the garage")
    await lookout_service.frame("garage", BLUE)
    async with watch_states(lookout_service) as states:
        await run_blueprint(homeassistant, "garage", what, minutes=1)
        job = await job_where(states, lambda j: j.get("condition") == what)
    return {"condition": what, "job": job, "started": time.monotonic()}


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def blueprint_alone(homeassistant: HomeAssistant, lookout: Lookout) -> None:
    """Only the blueprint notifies (the alert automations are switched on where tested)."""
    await set_automations(homeassistant, set())


async def test_met_at_once_five_times_in_a_row(
    homeassistant: HomeAssistant, lookout: Lookout, timeout_run: dict[str, Any]
) -> None:
    # The frame is red before the watch starts: its first check meets the condition, and
    # the reply and the alert leave lookout at once, before Home Assistant has subscribed.
    for n in range(IN_A_ROW):
        what = condition()
        await lookout.frame("porch", RED)
        async with watch_states(lookout) as states:
            await run_blueprint(homeassistant, "porch", what, minutes=5)
            started = await job_where(states, lambda j, w=what: j.get("condition") == w)
        push = await homeassistant.push.wait_for(titled(f"porch: {what}"), 20)
        assert push.message == MET_MESSAGE, (n, push)
        assert push.data == {
            "image": f"/api/image_proxy/{SNAPSHOT}",
            "entity_id": SNAPSHOT,
            "tag": f"lookout-{started['job_id']}",
        }
        assert started["labels"] == []  # no object classes given: none sent


async def test_met_with_a_slow_model_and_object_classes(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    lookout.model.delay_s = 3.0
    runs = [condition(), condition()]
    await lookout.frame("porch", RED)
    async with watch_states(lookout) as states:
        for what in runs:
            await run_blueprint(homeassistant, "porch", what, object_classes="person, car")
        jobs = [await job_where(states, lambda j, w=w: j.get("condition") == w) for w in runs]
    assert [j["labels"] for j in jobs] == [["person", "car"]] * 2
    for what in runs:
        push = await homeassistant.push.wait_for(titled(f"porch: {what}"), 30)
        assert push.message == MET_MESSAGE


async def test_a_watch_lookout_refuses_is_reported_with_lookout_s_reason(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await run_blueprint(homeassistant, "attic", condition())
    push = await homeassistant.push.wait_for(titled("lookout could not watch attic"), 20)
    assert "attic" in push.message and "did not answer" not in push.message


async def test_a_cancelled_watch_is_reported_as_cancelled(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    what = condition("the dog is in the driveway")
    await lookout.frame("driveway", BLUE)
    async with watch_states(lookout) as states:
        await run_blueprint(homeassistant, "driveway", what, minutes=5)
        job = await job_where(states, lambda j: j.get("condition") == what)
        await job_where(states, lambda j: j["job_id"] == job["job_id"] and j["iterations"] >= 1)
    job_id = job["job_id"]
    async with (
        MqttTestClient(lookout.broker.host, lookout.broker.port) as client,
        homeassistant.subscription(
            {"type": "subscribe_trigger",
             "trigger": {"trigger": "state", "entity_id": "event.lookout_watch_alert"}}
        ) as events,
    ):  # fmt: skip
        alerts = await client.subscribe(f"{PREFIX}/{USER}/watch/{job_id}/alert")
        reply = await lookout.request("watch", {"action": "cancel", "job_id": job_id})
        assert reply["type"] == "done" and reply["cancelled"] is True, reply
        # The contract: an alert for every way a watch ends, a cancel included.
        async with asyncio.timeout(10):
            alert = (await alerts.get()).json()
        assert alert["status"] == "cancelled" and alert["end_reason"] == "cancelled", alert
        fired = await events.wait_for(
            lambda e: (
                (e["variables"]["trigger"]["to_state"] or {}).get("attributes", {}).get("job_id")
                == job_id
            ),
            10,
        )
    assert fired["variables"]["trigger"]["to_state"]["attributes"]["event_type"] == "cancelled"
    push = await homeassistant.push.wait_for(titled("Stopped watching driveway"), 20)
    assert push.message == f"{what}: the watch was cancelled"
    assert push.data == {"tag": f"lookout-{job_id}"}


async def test_a_watch_that_fails_is_reported_with_lookout_s_reason(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    what = condition()
    await lookout.frame("porch", BLUE)
    async with watch_states(lookout) as states:
        await run_blueprint(homeassistant, "porch", what, minutes=5)
        job = await job_where(states, lambda j: j.get("condition") == what)
        await job_where(states, lambda j: j["job_id"] == job["job_id"] and j["iterations"] >= 1)
    # lookout comes back with Home Assistant's user no longer allowed to see the porch:
    # the resumed watch fails (and the garage watch of timeout_run goes on).
    await lookout.start(
        homeassistant, users={USER: {"role": "viewer", "cameras": ["garage", "driveway"]}}
    )
    push = await homeassistant.push.wait_for(titled("Stopped watching porch"), 30)
    assert push.message == f"{what}: the watch failed: the user may no longer see this camera"
    assert push.data == {"tag": f"lookout-{job['job_id']}"}


async def test_the_package_and_readme_automations_push_a_met_watch(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await set_automations(homeassistant, {PACKAGE_AUTOMATION, *README_AUTOMATIONS})
    await homeassistant.mqtt_barrier()
    what = condition()
    before = await homeassistant.get_state(SNAPSHOT)
    await lookout.frame("porch", RED)
    reply = await lookout.request(
        "watch", {"action": "start", "camera": "porch", "condition": what}
    )
    assert reply["type"] == "done", reply
    job_id = reply["job_id"]
    package = await homeassistant.push.wait_for(titled(f"porch: {what}"), 20)
    assert package.message == MET_MESSAGE
    assert package.data == {
        "image": f"/api/image_proxy/{SNAPSHOT}",
        "entity_id": SNAPSHOT,
        "tag": f"lookout-{job_id}",
    }
    readme = await homeassistant.push.wait_for(
        lambda p: (
            p.title == "porch: watch alert"
            and p.raw.get("data", {}).get("image")
            == "/api/image_proxy/image.lookout_watch_snapshot"
            and p.message == MET_MESSAGE
        ),
        20,
    )
    assert readme.message == MET_MESSAGE
    await homeassistant.push.wait_for(
        lambda p: p.title is None and p.message == f"porch: {MET_MESSAGE}", 20
    )
    # The snapshot the notifications point at is the frame that met the condition.
    await homeassistant.wait_for_state(SNAPSHOT, lambda s: s is not None and s != before)
    image = await image_bytes(homeassistant, SNAPSHOT)
    assert _is_red(image)


async def image_bytes(ha: HomeAssistant, entity_id: str) -> bytes:
    async with ha.session.get(
        f"{ha.base_url}/api/image_proxy/{entity_id}",
        headers={"Authorization": f"Bearer {ha.token}"},
    ) as response:
        assert response.status == 200, response.status
        return await response.read()


async def test_the_package_automation_ignores_the_alert_entity_going_away(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await set_automations(homeassistant, {PACKAGE_AUTOMATION})
    seen = len(homeassistant.log_records())
    runs = {t["run_id"] for t in await traces(homeassistant, PACKAGE_AUTOMATION)}
    # "Turn it off": lookout removes its device, and with it the alert entity.
    await lookout.start(homeassistant, homeassistant={"discovery": False})
    await homeassistant.wait_for_state("event.lookout_watch_alert", lambda s: s is None)
    # lookout going offline and then the removal triggered the automation; its condition
    # said no each time, without an error.
    for run in await new_traces(homeassistant, PACKAGE_AUTOMATION, runs):
        assert run.get("error") is None, run
        assert run["state"] == "stopped" and run["script_execution"] == "failed_conditions", run
    new = [text for _, text in homeassistant.log_records()[seen:] if "lookout" in text]
    assert [t for t in new if " ERROR " in t or " WARNING " in t] == []


async def traces(ha: HomeAssistant, automation_id: str) -> list[dict[str, Any]]:
    return await ha.ws.command(  # type: ignore[no-any-return]
        {"type": "trace/list", "domain": "automation", "item_id": automation_id}
    )


async def new_traces(
    ha: HomeAssistant, automation_id: str, known: set[str], rounds: int = 20
) -> list[dict[str, Any]]:
    """The automation's runs not in ``known``, once the one started by its entity's
    removal is among them. The caller saw the removal, so that run has started; each
    round trip through Home Assistant's MQTT (a barrier) gives it time to be recorded,
    without a fixed sleep."""
    for _ in range(rounds):
        fresh = [t for t in await traces(ha, automation_id) if t["run_id"] not in known]
        for run in fresh:
            detail = await ha.ws.command(
                {"type": "trace/get", "domain": "automation", "item_id": automation_id,
                 "run_id": run["run_id"]}
            )  # fmt: skip
            if detail["trace"]["trigger/0"][0]["changed_variables"]["trigger"]["to_state"] is None:
                return fresh
        await ha.mqtt_barrier()
    raise AssertionError(f"{automation_id} did not run when its entity went away")


async def test_a_watch_that_runs_out_of_time_is_reported_as_such(
    homeassistant: HomeAssistant, lookout: Lookout, timeout_run: dict[str, Any]
) -> None:
    what, job = timeout_run["condition"], timeout_run["job"]
    left = 60 - (time.monotonic() - timeout_run["started"])
    push = await homeassistant.push.wait_for(titled("Stopped watching garage"), left + 60)
    assert push.message == f"{what}: not seen in 1 minute"
    assert push.data == {"tag": f"lookout-{job['job_id']}"}

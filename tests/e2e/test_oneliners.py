"""Every command line of ``examples/oneliners.sh`` (the README's one-liners), run by bash
against the real worker, with ``HOST``, ``PORT`` and ``PREFIX`` set as the file says.

Each line needs a check below and each check a line: a one-liner added to the file
without a test, or a test whose line is gone, fails here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.broker import REPO
from tests.e2e.helpers import Lookout, Run, lookout_with_fake_llm, replay_frigate, run
from tests.fake_llm import text
from tests.mqttc import MqttTestClient

pytestmark = pytest.mark.e2e

ONELINERS = REPO / "examples" / "oneliners.sh"
ANSWER = "Alice came by at noon."


def command_lines() -> list[str]:
    return [
        line
        for line in ONELINERS.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def done(out: str) -> dict[str, Any]:
    reply = json.loads(out)
    assert reply["type"] == "done", reply
    return reply


def check_status(out: str, state: dict[str, Any]) -> None:
    assert out == "online\n"


def check_health(out: str, state: dict[str, Any]) -> None:
    assert done(out)["broker"]["connected"] is True


def check_chat(out: str, state: dict[str, Any]) -> None:
    assert done(out)["message"]["content"] == ANSWER


def check_tool(out: str, state: dict[str, Any]) -> None:
    result = done(out)["result"]
    assert result["count"] >= 1 and {o["label"] for o in result["objects"]} == {"person"}


def check_tools(out: str, state: dict[str, Any]) -> None:
    names = {t["function"]["name"] for t in json.loads(out)["tools"]}
    assert {"search_objects", "start_camera_watch"} <= names


def check_watch_start(out: str, state: dict[str, Any]) -> None:
    reply = done(out)
    assert reply["job"]["camera"] == "front_door"
    state["JOB"] = reply["job_id"]


def check_watch_list(out: str, state: dict[str, Any]) -> None:
    assert [j["job_id"] for j in done(out)["jobs"]] == [state["JOB"]]


def check_watch_cancel(out: str, state: dict[str, Any]) -> None:
    reply = done(out)
    assert reply["job_id"] == state["JOB"] and reply["job"]["status"] == "cancelled"


# (a fragment that picks the line out, what its output must be)
CHECKS: list[tuple[str, Callable[[str, dict[str, Any]], None]]] = [
    ('-t "$PREFIX/status"', check_status),
    ('-t "$PREFIX/me/health"', check_health),
    ('-t "$PREFIX/me/chat" -e', check_chat),
    ("-V mqttv311", check_chat),
    ('-t "$PREFIX/me/tool"', check_tool),
    ('-t "$PREFIX/tools"', check_tools),
    ('"action":"start"', check_watch_start),
    ('"action":"list"', check_watch_list),
    ('\\"action\\":\\"cancel\\"', check_watch_cancel),
]
ALERTS = '-t "$PREFIX/+/watch/+/alert"'


def test_every_line_has_exactly_one_check():
    lines = command_lines()
    fragments = [f for f, _ in CHECKS] + [ALERTS]
    for line in lines:
        assert sum(f in line for f in fragments) == 1, f"no single check for: {line}"
    assert len(lines) == len(fragments)
    for line in lines:
        assert line.split()[0] in ("mosquitto_sub", "mosquitto_rr", "mosquitto_pub"), line
        for var in ("$HOST", "$PORT"):
            assert line.count(var) == line.count("mosquitto_"), f"{var} missing: {line}"


@pytest.fixture
async def env(broker, worker_factory, mqtt):
    async with lookout_with_fake_llm(broker, worker_factory, mqtt) as env:
        # Every model call gets the same answer: the chats' (and the watch's, which it ignores).
        env.fake.set_responder(lambda _request: text(ANSWER))
        yield env


async def test_each_readme_one_liner_against_a_running_lookout(
    broker, env: Lookout, mqtt: MqttTestClient
):
    assert shutil.which("mosquitto_rr") and shutil.which("mosquitto_sub")
    await replay_frigate(mqtt, env)
    variables = {"HOST": broker.host, "PORT": str(broker.port), "PREFIX": env.prefix}
    state: dict[str, Any] = {}
    for line in command_lines():
        if ALERTS in line:
            result = await follow_alerts(line, variables, env.prefix, mqtt)
            topic, payload = result.stdout.split(" ", 1)
            assert topic == f"{env.prefix}/alice/watch/j1/alert"
            assert json.loads(payload)["camera"] == "front_door"
            continue
        check = next(c for f, c in CHECKS if f in line)
        result = await run("bash", "-c", line, env={**variables, **state}, limit=60)
        assert result.code == 0, f"{line}\n{result.stderr}"
        check(result.stdout, state)


async def follow_alerts(
    line: str, variables: dict[str, str], prefix: str, mqtt: MqttTestClient
) -> Run:
    """Run the waiting line; alerts are published until it has caught one and ended."""
    task = asyncio.ensure_future(run("bash", "-c", line, env=variables, limit=30))
    alert = {"job_id": "j1", "camera": "front_door", "condition": "a parcel",
             "message": "A parcel is on the porch.", "status": "success"}  # fmt: skip
    async with asyncio.timeout(30):
        while not task.done():
            await mqtt.publish(f"{prefix}/alice/watch/j1/alert", alert, qos=1)
            # Re-publish cadence until the subscriber is in place, not synchronisation.
            await asyncio.wait([task], timeout=0.2)
    result = task.result()
    assert result.code == 0, result.stderr
    return result

"""The change gate and the no-frames refusal end to end: the real `lookout run`, a real
mosquitto, the fake vision server over real HTTP (blue frames: not met, look again in 6 s;
red: met)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.e2e.test_watch import (
    BLUE,
    RED,
    ColourModel,
    frame_colour,
    is_watch_call,
    jpeg,
    start_worker,
    state_is,
    until,
    verdict,
)
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.mqttc import MqttTestClient, request

pytestmark = pytest.mark.e2e

NEXT_RUN_IN = 6
"""Longer than the gate's FORMING_S, so the scheduled checks go through the gate."""


class PacedModel(ColourModel):
    """The colour model, asking to look again in ``NEXT_RUN_IN`` s when nothing is there."""

    async def __call__(self, req: RecordedRequest) -> Reply:
        if is_watch_call(req) and frame_colour(req) == "blue":
            return verdict(False, "Only the empty porch.", next_run_in=NEXT_RUN_IN)
        return await super().__call__(req)


@contextlib.asynccontextmanager
async def camera(
    mqtt: MqttTestClient, prefix: str, colour: list[tuple[int, int, int]]
) -> AsyncIterator[None]:
    """A camera publishing one frame a second of ``colour[0]`` (the test changes it)."""
    frames = {c: jpeg(c, seed=7) for c in (BLUE, RED)}

    async def publish() -> None:
        while True:
            await mqtt.publish(f"{prefix}/camera/porch/frame", frames[colour[0]], qos=0)
            await asyncio.sleep(1.0)  # the camera's frame rate, not synchronisation

    task = asyncio.ensure_future(publish())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def watch_calls(fake: FakeLLM) -> list[RecordedRequest]:
    return [r for r in fake.requests if is_watch_call(r)]


@pytest.mark.parametrize("frigate_motion", [True, False], ids=["frigate-motion", "thumbnails"])
async def test_a_quiet_scene_costs_no_calls_and_a_change_alerts_within_a_check(
    broker, worker_factory, mqtt, frigate_motion: bool
) -> None:
    async with FakeLLM(responder=PacedModel()) as fake:
        worker, fp = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        colour = [BLUE]
        if frigate_motion:
            await mqtt.publish(f"{fp}/porch/motion", b"OFF", qos=1)
        watch_q = await mqtt.subscribe(f"{p}/alice/watch/#")
        async with camera(mqtt, p, colour):
            out = await request(
                mqtt,
                p,
                "alice",
                "watch",
                {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
            )
            assert out[-1]["type"] == "done", out
            job_id = out[-1]["job_id"]
            await until(watch_q, state_is(job_id, iterations=1, status="running"))
            # Three checks the model asked for, three skips: nothing changed.
            await until(watch_q, state_is(job_id, skipped_unchanged=3), timeout=40)
            assert len(watch_calls(fake)) == 1
            log = worker.log_text()
            reason = "no_motion" if frigate_motion else "unchanged"
            assert '"watch_check_skipped"' in log and f'"reason": "{reason}"' in log

            # The scene changes (and Frigate sees motion): the next due check looks.
            colour[0] = RED
            if frigate_motion:
                await mqtt.publish(f"{fp}/porch/motion", b"ON", qos=1)
            alert = await until(
                watch_q,
                lambda m: m.topic == f"{p}/alice/watch/{job_id}/alert",
                timeout=NEXT_RUN_IN + 10,
            )
            assert alert.json()["status"] == "success"
            assert len(watch_calls(fake)) == 2
        got = await request(mqtt, p, "alice", "watch", {"action": "get", "job_id": job_id})
        job = got[-1]["job"]
        assert job["model_calls"] == 2 and job["skipped_unchanged"] >= 3
        assert job["confirmations"] == 0


async def test_a_camera_lookout_cannot_see_is_refused_with_how_to_feed_it(
    broker, worker_factory, mqtt
) -> None:
    async with FakeLLM(responder=ColourModel()) as fake:
        worker, _ = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        # "porch" is configured, but no frame came, Frigate never mentioned it and there is
        # no frigate.url: nothing could ever show it to the model.
        out = await request(
            mqtt,
            p,
            "alice",
            "watch",
            {"action": "start", "camera": "porch", "condition": "a red car"},
        )
        assert [r["type"] for r in out] == ["error"], out
        error = out[0]["error"]
        assert error["code"] == "unavailable"
        for words in ("frigate.url", "lookout grab", f"{p}/camera/porch/frame"):
            assert words in error["message"], error
        listed = await request(mqtt, p, "alice", "watch", {"action": "list"})
        assert listed[-1]["count"] == 0

        # The chat tool gets the same refusal, as a tool error the model can pass on.
        chat = await request(
            mqtt, p, "bob", "chat", {"text": "Tell me when a red car is at the door"}, timeout=30
        )
        assert [r["type"] for r in chat].count("done") == 1 and chat[-1]["type"] == "done", chat
        assert sum(r["type"] in ("done", "error") for r in chat) == 1
        [result] = [r for r in chat if r["type"] == "tool_result"]
        assert result["name"] == "start_camera_watch" and result["ok"] is False
        assert "frigate.url" in json.dumps(result["result"])
        assert not [r for r in fake.requests if is_watch_call(r)]

        # Once a frame comes, the same start works.
        await mqtt.publish(f"{p}/camera/porch/frame", jpeg(BLUE), qos=0)
        out = await request(
            mqtt,
            p,
            "alice",
            "watch",
            {"action": "start", "camera": "porch", "condition": "a red car"},
        )
        assert out[-1]["type"] == "done" and "warning" not in out[-1]["job"], out

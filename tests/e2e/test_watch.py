"""Camera watches end to end: the real `lookout run`, a real mosquitto, the fake vision
server over real HTTP. The fake model judges each frame by its colour: red meets the
condition, blue does not, green makes it hang."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from service.store.db import create_engine, create_tables
from service.watch.machine import WatchJob, WatchStatus
from service.watch.store import WatchStore, job_to_row
from tests.fake_llm import FakeLLM, RecordedRequest, Reply, text, tool_calls
from tests.frigate_replay import tracked_object
from tests.mqttc import MqttTestClient, Received, next_message, request

pytestmark = pytest.mark.e2e

BLUE, RED, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def jpeg(color: tuple[int, int, int], seed: int = 0) -> bytes:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = color
    cv2.putText(image, f"{seed}", (5, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (128, 128, 128), 2)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def colour(data: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = image.reshape(-1, 3).mean(axis=0)
    return "red" if r > max(b, g) else "green" if g > max(b, r) else "blue"


def frame_colour(req: RecordedRequest) -> str:
    last = req.messages[-1]["content"]
    url = next(p["image_url"]["url"] for p in last if p["type"] == "image_url")
    return colour(base64.b64decode(url.split(",", 1)[1]))


def is_watch_call(req: RecordedRequest) -> bool:
    return bool(req.messages) and "watch one security camera" in str(req.messages[0].get("content"))


def verdict(met: bool, reasoning: str, message: str = "", next_run_in: int = 300) -> Reply:
    return text(
        json.dumps(
            {
                "condition_met": met,
                "next_run_in": next_run_in,
                "reasoning": reasoning,
                "notification_message": message,
            }
        )
    )


class ColourModel:
    """The fake vision model, plus the chat turns of `start_camera_watch`."""

    def __init__(self) -> None:
        self.hanging = 0
        self.hung_up = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, req: RecordedRequest) -> Reply:
        if not is_watch_call(req):
            if (req.last_message or {}).get("role") == "tool":
                return text("Watching the porch for you.")
            return tool_calls(
                [
                    (
                        "start_camera_watch",
                        {
                            "camera": "Porch",
                            "condition": "a red car is at the door",
                            "labels": ["car"],
                        },
                    )
                ]
            )
        seen = frame_colour(req)
        if seen == "red":
            return verdict(True, "A red car stopped at the door.", "A red car is at your door.")
        if seen == "green":
            self.hanging += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.hung_up.set()  # lookout closed the connection
                raise
            return verdict(True, "Late answer.", "This must never be sent.")
        return verdict(False, "Only the empty porch.")


async def start_worker(
    worker_factory, broker, mqtt, fake: FakeLLM, *, workdir_setup=None, **config: Any
):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    fp = f"{prefix}fr"
    cfg = {
        "llm": {
            "providers": {
                "fake": {
                    "base_url": fake.base_url,
                    "model": "fake-model",
                    "max_retries": 0,
                    "timeout_s": 30,
                }
            }
        },
        "frigate": {
            "topic_prefix": fp,
            "cameras": {"porch": {"friendly_name": "Porch", "zones": {"entrance": "Entrance"}}},
        },
        "watch": {"min_interval_s": 0.5},
        **config,
    }
    worker = worker_factory(broker, prefix=prefix, config=cfg)
    if workdir_setup is not None:
        await workdir_setup(worker.workdir)
    worker.start()
    await worker.wait_online(mqtt)
    return worker, fp


async def frame(mqtt: MqttTestClient, prefix: str, color: tuple[int, int, int]) -> None:
    await mqtt.publish(
        f"{prefix}/camera/porch/frame", jpeg(color, seed=int(time.time() * 1000) % 997), qos=0
    )


async def car_arrives(mqtt: MqttTestClient, fp: str, oid: str) -> None:
    now = time.time()
    after = tracked_object(
        oid, "porch", "car", now - 0.5, now, current=["entrance"], entered=["entrance"]
    )
    await mqtt.publish(f"{fp}/events", {"type": "new", "before": after, "after": after})


async def until(queue: asyncio.Queue[Received], pred, timeout: float = 30.0) -> Received:
    async with asyncio.timeout(timeout):
        while True:
            msg = await queue.get()
            if pred(msg):
                return msg


def state_is(job_id: str, **want: Any):
    def check(msg: Received) -> bool:
        if not msg.topic.endswith(f"/watch/{job_id}") or not msg.payload:
            return False
        body = msg.json()
        return all(body.get(k) == v for k, v in want.items())

    return check


async def test_watch_started_over_mqtt_wakes_on_a_detection_and_alerts_on_that_frame(
    broker, worker_factory, mqtt
):
    async with FakeLLM(responder=ColourModel()) as fake:
        worker, fp = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        watch_q = await mqtt.subscribe(f"{p}/alice/watch/#")
        frigate_q = await mqtt.subscribe(f"{fp}/camera_monitoring")
        await frame(mqtt, p, BLUE)
        out = await request(
            mqtt,
            p,
            "alice",
            "watch",
            {
                "action": "start",
                "camera": "porch",
                "condition": "a red car is at the door",
                "labels": ["car"],
                "zones": ["Entrance"],
            },
        )
        assert out[-1]["type"] == "done", out
        job_id = out[-1]["job_id"]
        assert out[-1]["job"]["zones"] == ["entrance"]

        await until(watch_q, state_is(job_id, iterations=1, status="running"))
        [req] = await fake.wait_for_requests(1)
        assert req.body["response_format"]["json_schema"]["name"] == "watch_verdict"
        assert req.body["chat_template_kwargs"]["enable_thinking"] is False
        assert frame_colour(req) == "blue"

        await car_arrives(mqtt, fp, "1767225600.0-car1")
        await frame(mqtt, p, RED)
        seen: list[Received] = []
        await until(
            watch_q, lambda m: seen.append(m) or m.topic == f"{p}/alice/watch/{job_id}/alert"
        )
        alert = seen[-1].json()
        assert alert["status"] == "success" and alert["message"] == "A red car is at your door."
        # The deciding frame (model-sized JPEG) came just before the alert, retained.
        snapshots = [m for m in seen if m.topic == f"{p}/alice/watch/{job_id}/snapshot"]
        assert len(snapshots) == 1 and colour(snapshots[0].payload) == "red"
        reqs = await fake.wait_for_requests(2)
        assert [frame_colour(r) for r in reqs] == ["blue", "red"]
        assert len(reqs[1].messages) == 4  # system, the blue frame and its answer, the red frame
        frigate = (await next_message(frigate_q, 10)).json()
        assert frigate == {
            "camera": "porch",
            "condition": "a red car is at the door",
            "message": "A red car is at your door.",
            "reasoning": "A red car stopped at the door.",
            "job_id": job_id,
        }
        async with MqttTestClient(broker.host, broker.port) as late:  # connects after the alert
            topic = f"{p}/alice/watch/{job_id}/snapshot"
            retained = await next_message(await late.subscribe(topic), 10)
            assert retained.retain and colour(retained.payload) == "red"
        listed = await request(mqtt, p, "alice", "watch", {"action": "list"})
        assert (
            listed[-1]["jobs"][0]["status"] == "success" and listed[-1]["jobs"][0]["wakeups"] == 1
        )


async def test_watch_started_by_chat_alerts_the_chatting_user(broker, worker_factory, mqtt):
    async with FakeLLM(responder=ColourModel()) as fake:
        worker, fp = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        watch_q = await mqtt.subscribe(f"{p}/bob/watch/+/alert")
        await frame(mqtt, p, BLUE)
        chat = await request(
            mqtt,
            p,
            "bob",
            "chat",
            {"text": "Tell me when a red car is at the door", "stream": False},
            timeout=30,
        )
        assert chat[-1]["type"] == "done", chat
        assert chat[-1]["message"]["content"] == "Watching the porch for you."
        reqs = await fake.wait_for_requests(3)  # chat, watch check (blue), chat
        watch_calls = [r for r in reqs if is_watch_call(r)]
        assert [frame_colour(r) for r in watch_calls] == ["blue"]

        await car_arrives(mqtt, fp, "1767225600.0-car2")
        await frame(mqtt, p, RED)
        alert = (await next_message(watch_q, 30)).json()
        assert alert["status"] == "success" and alert["camera"] == "porch"
        got = await request(mqtt, p, "bob", "watch", {"action": "get", "job_id": alert["job_id"]})
        assert got[-1]["job"]["source"] == "chat" and got[-1]["job"]["user"] == "bob"
        # Someone else cannot see or cancel it.
        other = await request(
            mqtt, p, "eve", "watch", {"action": "cancel", "job_id": alert["job_id"]}
        )
        assert other[-1]["error"]["code"] == "forbidden"


@pytest.mark.sqlite_store  # reads the worker's SQLite file itself
async def test_a_watch_that_runs_out_of_time_alerts_as_failed(
    broker, worker_factory, mqtt, tmp_path: Path
):
    # A watch started an hour ago with three seconds left, as lookout stored it.
    now = time.time()
    job = WatchJob("expiring01", "carol", "porch", "a red car is at the door", now - 3597, now + 3,
                   labels=("car",), max_duration_minutes=60, status=WatchStatus.RUNNING, updated_at=now)  # fmt: skip

    async def seed(workdir: Path) -> None:
        engine = create_engine(f"sqlite:///{workdir / 'lookout.db'}")
        await create_tables(engine)
        await WatchStore(engine).save(job_to_row(job))
        await engine.dispose()

    async with FakeLLM(responder=ColourModel()) as fake:
        worker, _ = await start_worker(worker_factory, broker, mqtt, fake, workdir_setup=seed)
        p = worker.prefix
        alert_q = await mqtt.subscribe(f"{p}/carol/watch/expiring01/alert")
        state_q = await mqtt.subscribe(f"{p}/carol/watch/expiring01")
        await frame(mqtt, p, BLUE)
        alert = (await next_message(alert_q, 30)).json()
        assert alert["status"] == "failed" and alert["end_reason"] == "timeout"
        assert "after 60 minutes" in alert["message"]
        await until(state_q, state_is("expiring01", status="failed", alerted=True))


async def test_cancel_during_the_model_call_alerts_the_cancel_never_the_answer(
    broker, worker_factory, mqtt
):
    model = ColourModel()
    async with FakeLLM(responder=model) as fake:
        worker, _ = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        alerts = await mqtt.subscribe(f"{p}/dave/watch/+/alert")
        await frame(mqtt, p, GREEN)
        out = await request(
            mqtt,
            p,
            "dave",
            "watch",
            {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
        )
        first = out[-1]["job_id"]
        await fake.wait_for_requests(1)  # the model is looking at the green frame, and hangs
        cancelled = await request(mqtt, p, "dave", "watch", {"action": "cancel", "job_id": first})
        assert cancelled[-1]["cancelled"] is True and cancelled[-1]["job"]["status"] == "cancelled"
        # Its one alert says it was cancelled (whoever waits on alerts learns of it).
        gone = await next_message(alerts, 10)
        assert gone.topic == f"{p}/dave/watch/{first}/alert"
        assert gone.json()["status"] == "cancelled" and gone.json()["end_reason"] == "cancelled"
        await asyncio.wait_for(model.hung_up.wait(), 10)  # lookout hung up on the model
        model.release.set()
        # A second watch alerts; the cancelled one never sends the answer it hung up on.
        await frame(mqtt, p, RED)
        out = await request(
            mqtt,
            p,
            "dave",
            "watch",
            {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
        )
        second = out[-1]["job_id"]
        alert = await next_message(alerts, 30)
        assert alert.topic == f"{p}/dave/watch/{second}/alert"
        state_q = await mqtt.subscribe(f"{p}/dave/watch/{first}")
        assert (await next_message(state_q, 10)).json()["status"] == "cancelled"
        assert "This must never be sent." not in worker.log_text()


async def test_kill_9_mid_call_and_restart_resumes_the_watch(broker, worker_factory, mqtt):
    model = ColourModel()
    async with FakeLLM(responder=model) as fake:
        worker, fp = await start_worker(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        await frame(mqtt, p, BLUE)
        out = await request(
            mqtt,
            p,
            "erin",
            "watch",
            {
                "action": "start",
                "camera": "porch",
                "condition": "a red car is at the door",
                "labels": ["car"],
            },
        )
        job_id = out[-1]["job_id"]
        deadline = out[-1]["job"]["deadline"]
        watch_q = await mqtt.subscribe(f"{p}/erin/watch/{job_id}")
        await until(watch_q, state_is(job_id, iterations=1))
        await car_arrives(mqtt, fp, "1767225600.0-car3")
        await frame(mqtt, p, GREEN)
        await until(watch_q, state_is(job_id, status="checking", model_calls=2))
        await fake.wait_for_requests(2)
        worker.kill()  # SIGKILL while the model is looking at the green frame

        worker.start()
        await worker.wait_online(mqtt)
        alert_q = await mqtt.subscribe(f"{p}/erin/watch/{job_id}/alert")
        await frame(mqtt, p, RED)
        alert = (await next_message(alert_q, 30)).json()
        assert alert["status"] == "success" and alert["job_id"] == job_id
        got = await request(mqtt, p, "erin", "watch", {"action": "get", "job_id": job_id})
        job = got[-1]["job"]
        assert (
            job["deadline"] == deadline and job["status"] == "success" and job["model_calls"] == 3
        )
        assert '"watches_resumed"' in worker.log_text()

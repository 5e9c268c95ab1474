"""The watch engine with its real store, frame store and Frigate mirror, a stub vision model,
a recording publisher and a clock running 60 times faster than the wall (1 s = 1 min)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

from service.frames.latest import FrameStore
from service.frigate.mirror import FrigateMirror
from service.llm.errors import LlmError, LlmErrorCode
from service.llm.events import TurnEnd
from service.mqtt.envelope import ErrorCode, ReplyChannel, ReplyRoute, RequestError
from service.mqtt.routes import RequestContext
from service.mqtt.topics import RequestKind, TopicMap
from service.settings import CameraSettings, FrigateSettings, Settings, UserSettings, WatchSettings
from service.store.db import create_engine, create_tables
from service.tools.auth import access_for
from service.tools.registry import ToolError
from service.tools.watch import StartWatchArgs
from service.watch.engine import WatchEngine, WatchRequest
from service.watch.machine import WatchEvent, WatchJob, WatchStatus
from service.watch.store import WatchStore, job_to_row
from service.watch.vlm import RESPONSE_FORMAT
from tests.frigate_replay import tracked_object

SPEED = 60.0
BLUE, RED, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


class ScaledClock:
    """Unix time running ``SPEED`` times faster than the wall."""

    def __init__(self) -> None:
        self.base, self.start = time.time(), time.monotonic()

    def now(self) -> float:
        return self.base + (time.monotonic() - self.start) * SPEED

    def seconds_until(self, when: float) -> float:
        return max(0.0, (when - self.now()) / SPEED)


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """A publisher that keeps everything and lets a test wait for a message."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self._changed = asyncio.Condition()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        async with self._changed:
            self.messages.append(Msg(topic, payload, retain))
            self._changed.notify_all()

    async def wait_for(self, pred: Callable[[Msg], bool], timeout: float = 10.0) -> Msg:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: any(pred(m) for m in self.messages))
            return next(m for m in self.messages if pred(m))

    def on(self, suffix: str) -> list[Msg]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def states(self, job_id: str) -> list[dict[str, Any]]:
        return [
            m.json() for m in self.messages if m.topic.endswith(f"/watch/{job_id}") and m.payload
        ]


def verdict(
    met: bool, next_run_in: int = 300, reasoning: str = "seen", message: str = ""
) -> TurnEnd:
    body = {
        "condition_met": met,
        "next_run_in": next_run_in,
        "reasoning": reasoning,
        "notification_message": message,
    }
    return TurnEnd(content=json.dumps(body), reasoning="", tool_calls=[], finish_reason="stop")


Responder = Callable[[list[dict[str, Any]]], Awaitable[TurnEnd]]


class Vision:
    """A stub provider: scripted answers, every call recorded."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[Responder] = []
        self.cancelled = 0
        self._changed = asyncio.Condition()

    def push(self, *answers: TurnEnd | Exception | Responder) -> None:
        for answer in answers:
            if isinstance(answer, TurnEnd | Exception):
                self.script.append(_const(answer))
            else:
                self.script.append(answer)

    async def complete(self, messages: list[dict[str, Any]], **kw: Any) -> TurnEnd:
        async with self._changed:
            self.calls.append({"messages": messages, **kw})
            self._changed.notify_all()
        if not self.script:
            raise AssertionError("unexpected model call")
        try:
            return await self.script.pop(0)(messages)
        except asyncio.CancelledError:
            async with self._changed:
                self.cancelled += 1
                self._changed.notify_all()
            raise

    async def wait_calls(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= n)

    async def wait_cancelled(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.cancelled >= n)


def _const(answer: TurnEnd | Exception) -> Responder:
    async def respond(_messages: list[dict[str, Any]]) -> TurnEnd:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return respond


class Providers:
    def __init__(self, vision: Vision | None) -> None:
        self.vision = vision

    def require_vision(self) -> Vision:
        if self.vision is None:
            raise LlmError(LlmErrorCode.UNAVAILABLE, "none")
        return self.vision


def jpeg(color: tuple[int, int, int]) -> bytes:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:] = color
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def color_of(data: bytes) -> tuple[int, int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return tuple(round(float(c)) for c in image.reshape(-1, 3).mean(axis=0))  # type: ignore[return-value]


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) < 40 for x, y in zip(a, b, strict=True))


class Rig:
    def __init__(self, tmp: Path, frigate_url: str | None = None, **watch: Any) -> None:
        self.tmp = tmp
        self.clock = ScaledClock()
        self.settings = Settings(
            frigate=FrigateSettings(
                url=frigate_url,
                cameras={
                    "driveway": CameraSettings(zones={"driveway": "Driveway", "street": ""}),
                    "porch": CameraSettings(),
                },
            ),
            watch=WatchSettings(**{"max_frame_age_s": 600, **watch}),
            users={"viewer": UserSettings(cameras=["porch"]), "boss": UserSettings(role="admin")},
        )
        self.topics = TopicMap("lk", "frigate")
        self.frames = FrameStore(clock=self.clock.now)
        self.mirror = FrigateMirror(self.settings.frigate, self.topics, clock=self.clock.now)
        for camera in ("driveway", "porch"):  # Frigate reports both cameras
            self.mirror.handle(f"frigate/{camera}/detect/state", b"ON", True)
        self.publisher = Recorder()
        self.vision = Vision()
        self.db = create_engine(f"sqlite:///{tmp / 'lookout.db'}")
        self.engine: WatchEngine | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> WatchEngine:
        await create_tables(self.db)
        self.engine = WatchEngine(
            self.settings, self.topics, self.db, self.mirror, self.frames,
            Providers(self.vision), self.publisher, clock=self.clock,  # type: ignore[arg-type]
        )  # fmt: skip
        # A frameless camera waits this long for a first frame before it is refused.
        self.engine.no_frame_grace_s = 0.05
        self.task = asyncio.create_task(self.engine.run(), name="test-watch-engine")
        return self.engine

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def frame(self, color: tuple[int, int, int], camera: str = "driveway") -> int:
        frame = self.frames.put(camera, jpeg(color))
        assert frame is not None
        return frame.seq

    def detection(
        self,
        oid: str,
        label: str = "person",
        zones: list[str] | None = None,
        kind: str = "new",
        stationary: bool = False,
    ) -> None:
        now = self.clock.now()
        after = tracked_object(
            oid,
            "driveway",
            label,
            now - 1,
            now,
            current=zones,
            entered=zones,
            stationary=stationary,
        )
        payload = {"type": kind, "before": after, "after": after}
        self.mirror.handle("frigate/events", json.dumps(payload).encode(), False)

    async def watch(self, user: str = "alice", **kw: Any) -> WatchJob:
        assert self.engine is not None
        args = {
            "camera": "driveway",
            "condition": "a person at the car",
            "max_duration_minutes": 60,
            "labels": ["person"],
            "zones": [],
            **kw,
        }
        return await self.engine.start(
            access_for(self.settings, user),
            args.pop("camera"),
            args.pop("condition"),
            args.pop("max_duration_minutes"),
            args.pop("labels"),
            args.pop("zones"),
            **args,
        )

    async def state(self, job_id: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        msg = await self.publisher.wait_for(
            lambda m: (
                m.topic == f"lk/{m.topic.split('/')[1]}/watch/{job_id}"
                and bool(m.payload)
                and pred(m.json())
            )
        )
        return msg.json()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    yield r
    await r.stop()
    await r.db.dispose()


def images(call: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for m in call["messages"] if isinstance(m["content"], list)
        for part in m["content"] if part["type"] == "image_url"
    ]  # fmt: skip


# -- the main path -----------------------------------------------------------------------


async def test_first_check_at_once_then_a_detection_wakes_it_and_it_alerts_on_that_frame(
    rig: Rig,
) -> None:
    await rig.start()
    rig.frame(BLUE)
    rig.vision.push(
        verdict(False, 300, "Only the parked car."),
        verdict(True, 300, "A person is at the car.", "Someone is at your car."),
    )
    job = await rig.watch(zones=["Driveway"])
    assert job.zones == ("driveway",) and job.labels == ("person",)
    await rig.state(job.id, lambda s: s["iterations"] == 1 and s["status"] == "running")
    first = rig.vision.calls[0]
    assert first["enable_thinking"] is False and first["response_format"] == RESPONSE_FORMAT
    assert len(images(first)) == 1 and first["messages"][0]["role"] == "system"
    assert "a person at the car" in first["messages"][0]["content"]

    rig.detection("p1", zones=["street"])  # not in the watched zone: no wake
    rig.detection("p2", zones=["driveway"])  # a new person in the zone: wakes at once ...
    await rig.state(job.id, lambda s: s["iterations"] == 1)
    assert len(rig.vision.calls) == 1  # ... but the frame it has predates the detection
    rig.frame(RED)
    alert = (
        await rig.publisher.wait_for(lambda m: m.topic == f"lk/alice/watch/{job.id}/alert")
    ).json()
    assert alert == {
        "job_id": job.id, "camera": "driveway", "condition": "a person at the car",
        "message": "Someone is at your car.", "reasoning": "A person is at the car.",
        "status": "success", "end_reason": "condition_met", "time": alert["time"],
    }  # fmt: skip
    second = rig.vision.calls[1]
    assert len(rig.vision.calls) == 2 and len(images(second)) == 2  # history + the new frame
    assert "person (moving in driveway)" in second["messages"][-1]["content"][0]["text"]
    snapshot = rig.publisher.on(f"/watch/{job.id}/snapshot")
    assert len(snapshot) == 1 and snapshot[0].retain and close(color_of(snapshot[0].payload), RED)
    frigate = [m.json() for m in rig.publisher.messages if m.topic == "frigate/camera_monitoring"]
    assert frigate == [
        {
            "camera": "driveway",
            "condition": "a person at the car",
            "message": "Someone is at your car.",
            "reasoning": "A person is at the car.",
            "job_id": job.id,
        }
    ]
    final = await rig.state(job.id, lambda s: s["status"] == "success")
    assert (
        final["wakeups"] == 1
        and final["model_calls"] == 2
        and final["end_reason"] == "condition_met"
    )
    stored = await WatchStore(rig.db).get(job.id)
    assert stored is not None and stored.status is WatchStatus.SUCCESS


async def test_watches_of_one_camera_share_its_frames(rig: Rig) -> None:
    await rig.start()
    rig.frame(GREEN)
    rig.vision.push(verdict(False), verdict(False))
    a, b = await rig.watch("alice"), await rig.watch("bob")
    await rig.state(a.id, lambda s: s["iterations"] == 1)
    await rig.state(b.id, lambda s: s["iterations"] == 1)
    stats = rig.frames.stats()
    assert stats["prepared"] == 1 and stats["cache_hits"] >= 1
    assert images(rig.vision.calls[0]) == images(rig.vision.calls[1])


async def test_no_frame_means_no_call_and_the_state_says_so(rig: Rig) -> None:
    await rig.start()
    rig.vision.push(verdict(True, message="Here."))
    job = await rig.watch()
    state = await rig.state(job.id, lambda s: s["status"] == "waiting_for_frame")
    assert rig.vision.calls == []
    # Frigate reports the camera, so its snapshots may come: the watch starts, and says so.
    assert "cropped snapshots" in state["warning"] and "lookout grab" in state["warning"]
    rig.frame(RED)
    await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))
    assert len(rig.vision.calls) == 1


async def test_the_same_frame_is_never_judged_twice(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_frame_age_s=30)
    try:
        await rig.start()
        rig.frame(BLUE)
        rig.vision.push(verdict(False, next_run_in=1), verdict(True))
        job = await rig.watch()
        # The model asked to look again in 1 s, but no new frame came: it waits, and once
        # the frame is older than max_frame_age_s the state says it is waiting for one.
        await rig.state(
            job.id, lambda s: s["status"] == "waiting_for_frame" and s["iterations"] == 1
        )
        assert len(rig.vision.calls) == 1
        rig.frame(RED)
        await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))
        assert len(rig.vision.calls) == 2
    finally:
        await rig.stop()
        await rig.db.dispose()


# -- cancel safety -----------------------------------------------------------------------


async def test_cancel_during_the_model_call_aborts_it_and_alerts_only_the_cancel(rig: Rig) -> None:
    await rig.start()
    rig.frame(RED)
    release = asyncio.Event()

    async def slow(_m: list[dict[str, Any]]) -> TurnEnd:
        await release.wait()
        return verdict(True, message="too late")

    rig.vision.push(slow)
    job = await rig.watch()
    await rig.vision.wait_calls(1)
    assert rig.engine is not None
    cancelled, done = await rig.engine.cancel(access_for(rig.settings, "alice"), job.id)
    assert done and cancelled.status is WatchStatus.CANCELLED
    release.set()
    await rig.state(job.id, lambda s: s["status"] == "cancelled")
    await rig.vision.wait_cancelled(1)  # lookout hung up on the model
    # One alert, the cancel's (every way a watch ends has one); the late "met" never.
    (alert,) = [m.json() for m in rig.publisher.on("/alert")]
    assert alert["status"] == "cancelled" and alert["end_reason"] == "cancelled"
    assert "cancelled" in alert["message"] and "too late" not in str(alert)
    assert rig.publisher.on("/snapshot") == []
    # Cancelling again is harmless and says it did nothing.
    again, done = await rig.engine.cancel(access_for(rig.settings, "alice"), job.id)
    assert not done and again.status is WatchStatus.CANCELLED


async def test_an_answer_landing_after_the_cancel_is_dropped(rig: Rig) -> None:
    engine = await rig.start()
    rig.frame(RED)

    async def racing(_m: list[dict[str, Any]]) -> TurnEnd:
        # The cancel request is served between the HTTP answer and this task resuming.
        runner = engine._live[next(iter(engine._live))]
        runner.job.transition(WatchEvent.CANCEL, rig.clock.now())
        return verdict(True, message="should never be sent")

    rig.vision.push(racing)
    job = await rig.watch()
    task = engine._live[job.id].task
    assert task is not None
    await asyncio.wait_for(task, 5)
    assert job.status is WatchStatus.CANCELLED and job.iterations == 0
    assert rig.publisher.on("/alert") == []


# -- endings and errors ------------------------------------------------------------------


async def test_timeout_alerts_as_failed(rig: Rig) -> None:
    await rig.start()
    rig.frame(BLUE)
    rig.vision.push(verdict(False, 300, "Nobody."))
    job = await rig.watch(max_duration_minutes=1)
    alert = (await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))).json()
    assert alert["status"] == "failed" and alert["end_reason"] == "timeout"
    assert "after 1 minute" in alert["message"] and alert["reasoning"] == "Nobody."
    assert [m.topic for m in rig.publisher.messages if m.topic == "frigate/camera_monitoring"] == []
    assert rig.publisher.on("/snapshot") == []


async def test_provider_errors_back_off_show_in_the_state_and_recover(rig: Rig) -> None:
    await rig.start()
    rig.frame(RED)
    rig.vision.push(
        LlmError(LlmErrorCode.UNAVAILABLE, "connection refused"),
        TurnEnd("I think yes.", "", [], "stop"),
        verdict(True, message="Found."),
    )
    job = await rig.watch()
    first = await rig.state(job.id, lambda s: s["status"] == "backoff")
    assert first["last_error"] == "llm_unavailable: connection refused" and first["errors"] == 1
    second = await rig.state(job.id, lambda s: s["status"] == "backoff" and s["errors"] == 2)
    assert second["last_error"].startswith("bad_answer:")
    await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))
    final = await rig.state(job.id, lambda s: s["status"] == "success")
    assert final["last_error"] is None and final["errors"] == 0 and final["model_calls"] == 3
    # The same frame was retried: a failed call judged nothing.
    assert images(rig.vision.calls[0]) == images(rig.vision.calls[2])


# -- limits and rights -------------------------------------------------------------------


async def test_limits_total_and_per_user(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_active=3, max_active_per_user=2)
    try:
        await rig.start()
        await rig.watch("alice")
        await rig.watch("alice")
        with pytest.raises(RequestError) as info:
            await rig.watch("alice")
        assert info.value.code is ErrorCode.RATE_LIMITED and len(info.value.details["running"]) == 2
        await rig.watch("bob")
        with pytest.raises(RequestError) as info:
            await rig.watch("carol")
        assert info.value.code is ErrorCode.OVERLOADED and "watch.max_active" in info.value.message
    finally:
        await rig.stop()
        await rig.db.dispose()


async def test_cameras_zones_and_owners(rig: Rig) -> None:
    engine = await rig.start()
    with pytest.raises(RequestError) as info:
        await rig.watch("viewer")  # may only see the porch
    assert info.value.code is ErrorCode.NOT_FOUND and info.value.details["available_cameras"] == [
        "porch"
    ]
    with pytest.raises(RequestError) as info:
        await rig.watch(zones=["garden"])
    assert info.value.code is ErrorCode.NOT_FOUND and info.value.details["available_zones"] == [
        "driveway",
        "street",
    ]
    job = await rig.watch("alice")
    with pytest.raises(RequestError) as info:
        await engine.cancel(access_for(rig.settings, "mallory"), job.id)
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(RequestError):
        await engine.get(access_for(rig.settings, "mallory"), job.id)
    other = await rig.watch("bob")
    assert [j.id for j in await engine.list_jobs(access_for(rig.settings, "alice"))] == [job.id]
    assert {j.id for j in await engine.list_jobs(access_for(rig.settings, "boss"))} == {
        job.id,
        other.id,
    }
    _, done = await engine.cancel(access_for(rig.settings, "boss"), job.id)
    assert done


async def test_no_vision_model_refuses_to_start(rig: Rig) -> None:
    await rig.start()
    assert rig.engine is not None
    rig.engine.providers = Providers(None)  # type: ignore[assignment]
    with pytest.raises(RequestError) as info:
        await rig.watch()
    assert info.value.code is ErrorCode.LLM_UNAVAILABLE


# -- the request and the tools -------------------------------------------------------------


async def test_requests_reply_once_each(rig: Rig) -> None:
    engine = await rig.start()

    async def ask(body: dict[str, Any], user: str = "alice") -> dict[str, Any]:
        rid = f"r{len(rig.publisher.messages)}"
        reply = ReplyChannel(rig.publisher, ReplyRoute(f"lk/{user}/reply/{rid}"), rid)
        ctx = RequestContext(user, rid, RequestKind.WATCH, reply, time.time())
        await engine.handle(WatchRequest.model_validate({"id": rid, **body}), ctx)
        replies = [m.json() for m in rig.publisher.messages if m.topic == f"lk/{user}/reply/{rid}"]
        assert len(replies) == 1 and replies[0]["type"] == "done"
        return replies[0]

    started = await ask(
        {"action": "start", "camera": "Driveway", "condition": "a cat", "max_duration_minutes": 5}
    )
    job_id = started["job_id"]
    assert started["job"]["camera"] == "driveway" and started["job"]["max_duration_minutes"] == 5
    assert (await ask({"action": "get", "job_id": job_id}))["job"]["condition"] == "a cat"
    listed = await ask({"action": "list"})
    assert listed["count"] == 1 and listed["jobs"][0]["job_id"] == job_id
    cancelled = await ask({"action": "cancel", "job_id": job_id})
    assert cancelled["cancelled"] is True and cancelled["job"]["status"] == "cancelled"
    # A replayed start (same request id) returns the job it created, not a second one.
    again = await engine.start(
        access_for(rig.settings, "alice"), "driveway", "x", 5, [], [], request_id=started["id"]
    )
    assert again.id == job_id


@pytest.mark.parametrize(
    ("body", "problem"),
    [({"action": "start", "camera": "driveway"}, "condition"), ({"action": "get"}, "job_id"),
     ({"action": "start", "camera": "d", "condition": "c", "max_duration_minutes": 1441}, "1440"),
     ({"action": "stop"}, "action")],
)  # fmt: skip
def test_request_validation(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        WatchRequest.model_validate(body)


async def test_chat_tools_start_and_stop(rig: Rig) -> None:
    engine = await rig.start()
    alice = access_for(rig.settings, "alice")
    out = await engine.start_from_tool(
        StartWatchArgs(camera="driveway", condition="a van", labels=["Car"]), alice
    )
    assert out["status"] in ("pending", "running", "waiting_for_frame") and out["labels"] == ["car"]
    stored = await WatchStore(rig.db).get(out["job_id"])
    assert stored is not None and stored.source == "chat"
    with pytest.raises(ToolError) as info:
        await engine.start_from_tool(StartWatchArgs(camera="garage", condition="x"), alice)
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ToolError):
        await engine.start_from_tool(
            StartWatchArgs(camera="driveway", condition="x", max_duration_minutes=0), alice
        )
    second = await engine.start_from_tool(
        StartWatchArgs(camera="driveway", condition="a bike"), alice
    )
    with pytest.raises(ToolError) as info:
        await engine.stop_from_tool(None, alice)
    assert len(info.value.extra["running"]) == 2
    assert (await engine.stop_from_tool(second["job_id"], alice))["cancelled"] is True
    assert (await engine.stop_from_tool(None, alice)) == {
        "job_id": out["job_id"],
        "cancelled": True,
        "status": "cancelled",
    }
    with pytest.raises(ToolError) as info:
        await engine.stop_from_tool(None, alice)
    assert info.value.code is ErrorCode.NOT_FOUND


# -- persistence -------------------------------------------------------------------------


async def test_a_restart_resumes_the_job_with_its_deadline(rig: Rig) -> None:
    await rig.start()
    rig.frame(BLUE)
    rig.vision.push(verdict(False, 300))
    job = await rig.watch()
    await rig.state(job.id, lambda s: s["iterations"] == 1)
    await rig.stop()  # lookout goes away; the job stays unfinished in the store

    rig.frames = FrameStore(clock=rig.clock.now)
    rig.vision.push(verdict(True, message="Back and found it."))
    engine = await rig.start()
    await rig.state(job.id, lambda s: s["status"] == "waiting_for_frame")
    assert engine.stats()["resumed"] == 1
    rig.frame(RED)
    alert = (await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))).json()
    assert alert["message"] == "Back and found it."
    await rig.state(job.id, lambda s: s["alerted"])
    stored = await WatchStore(rig.db).get(job.id)
    assert (
        stored is not None
        and stored.deadline == job.deadline
        and stored.created_at == job.created_at
    )
    assert stored.model_calls == 2 and stored.alerted


async def test_an_alert_lost_in_a_crash_is_sent_at_start(rig: Rig) -> None:
    await create_tables(rig.db)
    now = rig.clock.now()
    done = WatchJob(
        "lost1",
        "alice",
        "driveway",
        "a fox",
        now - 60,
        now + 3000,
        status=WatchStatus.CHECKING,
        last_reasoning="A fox.",
        notification_message="A fox is here.",
    )
    done.transition(WatchEvent.MET, now - 1)
    await WatchStore(rig.db).save(job_to_row(done))
    await rig.start()
    alert = (await rig.publisher.wait_for(lambda m: m.topic == "lk/alice/watch/lost1/alert")).json()
    assert alert["status"] == "success" and alert["message"] == "A fox is here."
    await rig.state("lost1", lambda s: s["alerted"])
    stored = await WatchStore(rig.db).get("lost1")
    assert stored is not None and stored.alerted


async def test_finished_jobs_leave_history_and_their_retained_topics(tmp_path: Path) -> None:
    rig = Rig(tmp_path, history_keep_s=0)
    try:
        await rig.start()
        rig.frame(RED)
        rig.vision.push(verdict(True))
        job = await rig.watch()
        await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))
        cleared = await rig.publisher.wait_for(
            lambda m: m.topic == f"lk/alice/watch/{job.id}" and m.payload == b""
        )
        assert cleared.retain
        await rig.publisher.wait_for(
            lambda m: m.topic == f"lk/alice/watch/{job.id}/snapshot" and m.payload == b""
        )
        assert await WatchStore(rig.db).get(job.id) is None
    finally:
        await rig.stop()
        await rig.db.dispose()


async def test_without_mqtt_frames_it_fetches_one_from_frigates_api(tmp_path: Path) -> None:
    served: list[str] = []

    async def latest(request: web.Request) -> web.Response:
        served.append(request.match_info["camera"])
        return web.Response(body=jpeg(RED), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/api/{camera}/latest.jpg", latest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rig = Rig(tmp_path, frigate_url=f"http://127.0.0.1:{port}")
    try:
        await rig.start()
        rig.vision.push(verdict(True, message="From Frigate."))
        job = await rig.watch()
        alert = (await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))).json()
        assert alert["message"] == "From Frigate." and served == ["driveway"]
        [snapshot] = rig.publisher.on(f"/watch/{job.id}/snapshot")
        assert close(color_of(snapshot.payload), RED)
        assert rig.frames.latest("driveway") is not None  # shared with the camera's other watches
    finally:
        await rig.stop()
        await rig.db.dispose()
        await runner.cleanup()


@pytest.mark.parametrize(("keep", "expected"), [(0, [1, 1, 1]), (1, [1, 2, 2]), (10, [1, 2, 3])])
async def test_history_sent_to_the_model_is_bounded(
    tmp_path: Path, keep: int, expected: list[int]
) -> None:
    rig = Rig(tmp_path, max_history=keep)
    try:
        await rig.start()
        rig.frame(BLUE)
        rig.vision.push(verdict(False, 1), verdict(False, 1), verdict(True))
        job = await rig.watch()
        for n, color in ((1, GREEN), (2, RED)):
            await rig.state(
                job.id, lambda s, n=n: s["iterations"] == n and s["status"] == "running"
            )
            rig.frame(color)
        await rig.publisher.wait_for(lambda m: m.topic.endswith(f"{job.id}/alert"))
        assert [len(images(c)) for c in rig.vision.calls] == expected
    finally:
        await rig.stop()
        await rig.db.dispose()


async def test_a_cancel_alert_lost_in_a_crash_is_sent_only_if_recent(rig: Rig) -> None:
    await create_tables(rig.db)
    now = rig.clock.now()
    for job_id, ended in (("recent", now - 5), ("old", now - 3600)):
        job = WatchJob(job_id, "alice", "driveway", "a fox", ended - 60, ended + 3000,
                       status=WatchStatus.RUNNING)  # fmt: skip
        job.transition(WatchEvent.CANCEL, ended)
        await WatchStore(rig.db).save(job_to_row(job))
    await rig.start()
    alert = (await rig.publisher.wait_for(lambda m: m.topic.endswith("/alert"))).json()
    assert alert["job_id"] == "recent" and alert["status"] == "cancelled"
    await rig.state("recent", lambda s: s["alerted"])
    # The old cancel (from before cancels alerted) stays silent.
    assert [m for m in rig.publisher.on("/alert") if "old" in m.topic] == []

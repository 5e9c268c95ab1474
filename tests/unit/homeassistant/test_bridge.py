"""The Home Assistant bridge's logic with an in-memory publisher (no sockets).

A small stand-in for lookout answers the bridge's requests by handing replies back to
``handle`` the way the dispatcher would; the real path over a broker is in
``tests/integration/test_discovery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from service.homeassistant.bridge import HomeAssistantBridge
from service.homeassistant.payloads import (
    FINISHED_WATCH_STATUSES,
    WatchJobState,
    parse_jobs,
    parse_reply,
)
from service.mqtt.bus import Message
from service.mqtt.topics import TopicMap
from service.settings import HomeAssistantSettings

Responder = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class FakeLookout:
    """Records what the bridge publishes; answers requests with ``responder``."""

    def __init__(self, bridge: HomeAssistantBridge, responder: Responder | None = None) -> None:
        self.bridge = bridge
        self.responder = responder
        self.published: list[tuple[str, bytes, bool]] = []
        self._waiters: list[tuple[str, asyncio.Future[bytes]]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False):
        self.published.append((topic, payload, retain))
        for wanted, fut in list(self._waiters):
            if wanted == topic and not fut.done():
                fut.set_result(payload)
        if "/ha/" not in topic and self.responder is not None and not topic.endswith("/config"):
            body = json.loads(payload)
            kind = topic.rsplit("/", 1)[1]
            reply = self.responder(kind, body)
            if reply is not None:
                out = {"id": body["id"], "seq": 0, **reply}
                self.bridge.handle(Message(body["reply_to"], json.dumps(out).encode(), qos=1))

    async def next_on(self, topic: str, timeout: float = 5.0) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.append((topic, fut))
        return await asyncio.wait_for(fut, timeout)

    def last(self, topic: str) -> tuple[bytes, bool]:
        for t, payload, retain in reversed(self.published):
            if t == topic:
                return payload, retain
        raise AssertionError(f"nothing published on {topic}")


def health_reply(chat: str | None = "fake") -> dict[str, Any]:
    return {"type": "done", "version": "0", "llm": {"chat": chat, "vision": chat}}


@contextlib.asynccontextmanager
async def running(responder: Responder | None = None, **settings: Any):
    settings.setdefault("llm_check_interval_s", 0)
    bridge = HomeAssistantBridge(HomeAssistantSettings(**settings), TopicMap("lk", "fr"))
    fake = FakeLookout(bridge, responder)
    announced = asyncio.ensure_future(fake.next_on(bridge.ha.config))
    task = asyncio.create_task(bridge.run(fake), name="bridge-under-test")
    await announced
    try:
        yield bridge, fake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def msg(topic: str, payload: Any, *, retain: bool = False) -> Message:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Message(topic, data, qos=1, retain=retain)


async def test_a_question_becomes_a_chat_request_and_its_answer_the_sensor_state():
    seen: list[dict[str, Any]] = []
    answer = "A person came by at noon. " * 20  # longer than a state may be

    def lookout(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "health":
            return health_reply()
        seen.append(body)
        return {
            "type": "done",
            "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop",
            "tool_iterations": 1,
            "tool_calls": [
                {
                    "name": "search_objects",
                    "arguments": {"label": "person"},
                    "response": {"count": 1},
                },
                {"name": "big", "arguments": {}, "response": {"rows": ["x" * 50] * 100}},
            ],
            "conversation_id": "conv1",
        }

    async with running(lookout) as (bridge, fake):
        state = asyncio.ensure_future(fake.next_on(bridge.ha.answer))
        bridge.handle(msg(bridge.ha.ask, b"Who came by?"))
        text = (await state).decode()
        assert len(text) == 255 and text.startswith("A person came by at noon.")
        attrs = json.loads(fake.last(bridge.ha.answer_attributes)[0])
        assert attrs["answer"] == answer and attrs["question"] == "Who came by?"
        assert attrs["conversation_id"] == "conv1"
        assert attrs["tool_calls"][0] == {
            "name": "search_objects", "arguments": {"label": "person"}, "response": {"count": 1}
        }  # fmt: skip
        assert isinstance(attrs["tool_calls"][1]["response"], str)  # cut, not dropped
        assert fake.last(bridge.ha.question) == (b"Who came by?", True)
        assert fake.last(bridge.ha.llm) == (b"ON", True)
        (request,) = seen
        assert request["text"] == "Who came by?" and request["stream"] is False
        assert request["reply_to"] == bridge.ha.replies and "conversation_id" not in request

        # A follow-up soon after continues the conversation.
        state = asyncio.ensure_future(fake.next_on(bridge.ha.answer))
        bridge.handle(msg(bridge.ha.ask, b"And then?"))
        await state
        assert seen[1]["conversation_id"] == "conv1"


async def test_a_follow_up_after_the_window_starts_a_new_conversation():
    seen: list[dict[str, Any]] = []

    def lookout(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(body)
        return {"type": "done", "message": {"content": "ok"}, "conversation_id": "c"}

    async with running(lookout, continue_conversation_s=0) as (bridge, fake):
        for question in (b"one", b"two"):
            state = asyncio.ensure_future(fake.next_on(bridge.ha.answer))
            bridge.handle(msg(bridge.ha.ask, question))
            await state
    chats = [b for b in seen if "text" in b]
    assert all("conversation_id" not in b for b in chats)


async def test_an_llm_error_is_the_answer_and_turns_the_llm_sensor_off():
    def lookout(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "health":
            return health_reply()
        return {"type": "error", "error": {"code": "llm_auth", "message": "the key was refused"}}

    async with running(lookout) as (bridge, fake):
        state = asyncio.ensure_future(fake.next_on(bridge.ha.answer))
        bridge.handle(msg(bridge.ha.ask, b"hello"))
        assert await state == b"Error: the key was refused"
        assert fake.last(bridge.ha.llm) == (b"OFF", True)
        assert (
            json.loads(fake.last(bridge.ha.llm_attributes)[0])["last_error"]["code"] == "llm_auth"
        )


async def test_no_chat_provider_means_llm_off():
    async with running(lambda kind, body: health_reply(chat=None)) as (bridge, fake):
        assert await fake.next_on(bridge.ha.llm) == b"OFF"


async def test_a_live_alert_fires_the_event_and_a_replayed_one_does_not():
    async with running() as (bridge, fake):
        alert = {"job_id": "j1", "camera": "front_door", "condition": "a parcel arrives",
                 "message": "A parcel is on the porch.", "reasoning": "box", "status": "success"}  # fmt: skip
        event = asyncio.ensure_future(fake.next_on(bridge.ha.alert_event))
        bridge.handle(msg("lk/alice/watch/old/alert", {**alert, "job_id": "old"}, retain=True))
        bridge.handle(msg("lk/alice/watch/j1/alert", alert))
        fired = json.loads(await event)
        assert fired == {"event_type": "alert", "user": "alice", **alert}  # no end_reason

        event = asyncio.ensure_future(fake.next_on(bridge.ha.alert_event))
        bridge.handle(
            msg("lk/bob/watch/j2/alert", {**alert, "job_id": "j2", "end_reason": "condition_met"})
        )
        assert json.loads(await event)["event_type"] == "condition_met"
        event = asyncio.ensure_future(fake.next_on(bridge.ha.alert_event))
        bridge.handle(msg("lk/bob/watch/j3/alert", {**alert, "job_id": "j3", "end_reason": "odd"}))
        assert json.loads(await event)["event_type"] == "alert"
        assert [t for t, _, _ in fake.published].count(bridge.ha.alert_event) == 3
        assert fake.last(bridge.ha.alert_event)[1] is False  # events are never retained

        image = asyncio.ensure_future(fake.next_on(bridge.ha.snapshot))
        bridge.handle(msg("lk/alice/watch/old/snapshot", b"\xff\xd8old", retain=True))
        bridge.handle(msg("lk/alice/watch/j1/snapshot", b"\xff\xd8new"))
        assert await image == b"\xff\xd8new"
        assert fake.last(bridge.ha.snapshot) == (b"\xff\xd8new", True)


async def test_watch_states_count_active_watches():
    async with running() as (bridge, fake):

        async def count_after(*messages: Message) -> int:
            state = asyncio.ensure_future(fake.next_on(bridge.ha.watches))
            for m in messages:
                bridge.handle(m)
            return int(await state)

        def job(user: str, job_id: str, status: str) -> dict[str, Any]:
            # The engine's retained state document: the fields the bridge reads, and more.
            return {"job_id": job_id, "user": user, "camera": "driveway",
                    "condition": "a car parks", "labels": [], "zones": [], "status": status,
                    "iterations": 0, "created_at": 1795486508.1, "deadline": 1795490108.1}  # fmt: skip

        counted = await count_after(
            msg("lk/alice/watch/a1", job("alice", "a1", "running"), retain=True),
            msg("lk/bob/watch/b1", job("bob", "b1", "waiting_for_frame")),
            msg("lk/bob/watch/b0", job("bob", "b0", "success")),
            msg("lk/bob/watch/b2", b"{not json"),
        )
        assert counted == 2
        attrs = json.loads(fake.last(bridge.ha.watches_attributes)[0])
        assert [(w["user"], w["job_id"]) for w in attrs["watches"]] == [
            ("alice", "a1"),
            ("bob", "b1"),
        ]
        assert attrs["watches"][0]["condition"] == "a car parks"
        assert await count_after(msg("lk/alice/watch/a1", job("alice", "a1", "cancelled"))) == 1
        assert await count_after(msg("lk/bob/watch/b1", b"")) == 0


async def test_the_button_lists_and_cancels_every_active_watch():
    requests: list[dict[str, Any]] = []
    done = asyncio.Event()

    def lookout(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind != "watch":
            return None
        requests.append(body)
        if body["action"] == "list":
            return {"type": "done", "jobs": [
                {"job_id": "w1", "status": "running"},
                {"job_id": "w2", "status": "pending"},
                {"camera": "no job id: skipped"},
                {"job_id": "w3", "status": "success"},
            ]}  # fmt: skip
        if body["job_id"] == "w2":
            done.set()
            return {"type": "error", "error": {"code": "forbidden", "message": "not yours"}}
        return {"type": "done", "job_id": body["job_id"], "status": "cancelled"}

    async with running(lookout) as (bridge, _fake):
        bridge.handle(msg(bridge.ha.cancel_watches, b"PRESS"))
        await asyncio.wait_for(done.wait(), 5)
    assert [(r["action"], r.get("job_id")) for r in requests] == [
        ("list", None), ("cancel", "w1"), ("cancel", "w2")
    ]  # fmt: skip


async def test_home_assistant_coming_online_gets_the_discovery_again():
    async with running() as (bridge, fake):
        again = asyncio.ensure_future(fake.next_on(bridge.ha.config))
        bridge.handle(msg(bridge.ha.ha_status, b"offline"))
        bridge.handle(msg(bridge.ha.ha_status, b"online"))
        doc = json.loads(await again)
        assert doc["dev"]["identifiers"] == ["lk"]
        assert [t for t, _, _ in fake.published].count(bridge.ha.config) == 2


async def test_discovery_off_removes_the_device_and_subscribes_to_nothing():
    bridge = HomeAssistantBridge(HomeAssistantSettings(discovery=False), TopicMap("lk", "fr"))
    fake = FakeLookout(bridge)
    assert bridge.subscriptions() == []
    await asyncio.wait_for(bridge.run(fake), 5)  # returns once the device is removed
    assert fake.published == [("homeassistant/device/lk/config", b"", True)]


def test_subscriptions_cover_every_topic_the_bridge_reads():
    bridge = HomeAssistantBridge(HomeAssistantSettings(), TopicMap("lk", "fr"))
    subs = dict(bridge.subscriptions())
    assert subs == {
        "homeassistant/status": 1,
        "lk/homeassistant/ha/ask": 1,
        "lk/homeassistant/ha/watches/cancel": 1,
        "lk/homeassistant/ha/replies": 1,
        "lk/+/watch/+/alert": 1,
        "lk/+/watch/+/snapshot": 0,
        "lk/+/watch/+": 1,
    }


@pytest.mark.parametrize(
    ("status", "active"),
    [("pending", True), ("running", True), ("waiting_for_frame", True), ("checking", True),
     ("backoff", True), ("success", False), ("failed", False), ("cancelled", False)],
)  # fmt: skip
def test_watch_active(status, active):
    assert WatchJobState(job_id="j", status=status).active is active


def test_finished_statuses_are_the_watch_engines_terminal_ones():
    from service.watch.machine import TERMINAL

    assert {s.value for s in TERMINAL} == FINISHED_WATCH_STATUSES


def test_reply_and_list_parsing():
    assert parse_reply(b'{"id": "r1", "type": "done", "seq": 0, "jobs": []}').body()["jobs"] == []
    assert parse_reply(b'{"type": "done"}') is None and parse_reply(b"not json") is None
    jobs = parse_jobs({"jobs": [{"job_id": "a", "status": "running"}, "junk", {"camera": "x"}]})
    assert [(j.job_id, j.active) for j in jobs] == [("a", True)]
    assert parse_jobs({"jobs": None}) == [] and parse_jobs({}) == []


def health_with_frigate(available: str | dict[str, str | None] | None) -> Responder:
    """Health replies saying Frigate's availability (a dict: its current ``value``)."""

    def lookout(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "health":
            value = available.get("value") if isinstance(available, dict) else available
            return {**health_reply(), "frigate": {"available": value, "cameras": []}}
        return None

    return lookout


@pytest.mark.parametrize(
    ("available", "state"),
    [(None, b"OFF"), ("online", b"ON"), ("offline", b"OFF"), ("stopped", b"OFF")],
)
async def test_the_frigate_sensor_starts_from_what_lookout_s_health_says(available, state):
    # None: Frigate never said anything (lookout's mirror saw no availability): the
    # sensor reads off, not unknown.
    bridge = HomeAssistantBridge(
        HomeAssistantSettings(llm_check_interval_s=0), TopicMap("lk", "fr")
    )
    fake = FakeLookout(bridge, health_with_frigate(available))
    frigate = asyncio.ensure_future(fake.next_on(bridge.ha.frigate))
    task = asyncio.create_task(bridge.run(fake), name="bridge-under-test")
    try:
        assert await frigate == state
        assert fake.last(bridge.ha.frigate) == (state, True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_frigate_s_own_availability_messages_update_the_sensor():
    frigate: dict[str, str | None] = {"value": None}  # what lookout's mirror saw
    async with running(health_with_frigate(frigate)) as (bridge, fake):
        await fake.next_on(bridge.ha.frigate)
        assert "fr/available" not in dict(bridge.subscriptions())  # the mirror's subscription
        for payload, state in ((b"online", b"ON"), (b"stopped", b"OFF"), (b"online", b"ON")):
            frigate["value"] = payload.decode()
            published = asyncio.ensure_future(fake.next_on(bridge.ha.frigate))
            bridge.handle(msg("fr/available", payload, retain=True))
            assert await published == state
        # The same state again publishes nothing new; Home Assistant's birth republishes it.
        count = len(fake.published)
        bridge.handle(msg("fr/available", b"online"))
        again = asyncio.ensure_future(fake.next_on(bridge.ha.frigate))
        bridge.handle(msg("homeassistant/status", b"online"))
        assert await again == b"ON"
        assert [t for t, _, _ in fake.published[count:]].count(bridge.ha.frigate) == 1

"""What a real Frigate install sends, replayed through the real worker on a real broker.

Every payload here has the shape Frigate's own code publishes (see tests/frigate_replay.py
and tests/frigate_api.py for the sources): face updates on every recognition attempt
with a running guess, ``sub_label`` ``[null, null]`` when cleared, ``available`` going
``stopped`` with no ``end`` for what was open, zone names Frigate does not restrict,
retained snapshots, ``latest.jpg`` with ``X-Frigate-Offline``, and the ``/api/events`` and
``/api/review`` history with Frigate's paging rules.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.helpers import health, tool
from tests.fake_llm import FakeLLM
from tests.frigate_api import FakeFrigateApi, api_event, api_review
from tests.frigate_replay import SNAPSHOT_JPEG, review_object, tracked_object
from tests.mqttc import MqttTestClient, next_message

pytestmark = pytest.mark.e2e

CAM = "front_door"


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Re-ask ``check`` until it returns something truthy (the worker has no push for it)."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(0.1)  # re-ask cadence: health and tools are the only window
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}") from None


class Frigate:
    """Publishes as Frigate does, under a test's own topic prefix."""

    def __init__(self, mqtt: MqttTestClient, prefix: str) -> None:
        self.mqtt = mqtt
        self.p = prefix

    async def event(self, kind: str, after: dict[str, Any]) -> None:
        body = {"type": kind, "before": after, "after": after}
        await self.mqtt.publish(f"{self.p}/events", json.dumps(body).encode(), qos=1)

    async def update(self, body: dict[str, Any]) -> None:
        await self.mqtt.publish(f"{self.p}/tracked_object_update", json.dumps(body).encode(), qos=1)

    async def review(self, kind: str, after: dict[str, Any]) -> None:
        body = {"type": kind, "before": after, "after": after}
        await self.mqtt.publish(f"{self.p}/reviews", json.dumps(body).encode(), qos=1)

    async def available(self, value: str) -> None:
        await self.mqtt.publish(f"{self.p}/available", value.encode(), qos=1, retain=True)

    async def state(self, camera: str, feature: str, value: str) -> None:
        topic = f"{self.p}/{camera}/{feature}/state"
        await self.mqtt.publish(topic, value.encode(), qos=1, retain=True)


def face(oid: str, name: str | None, score: float) -> dict[str, Any]:
    """A face recognition attempt as Frigate's face processor publishes it."""
    return {
        "type": "face",
        "name": name,
        "score": score,
        "id": oid,
        "camera": CAM,
        "timestamp": time.time(),
    }


@pytest.fixture
async def setup(broker, worker_factory, mqtt):
    """Start a worker; returns ``(prefix, frigate)``. Pass config overrides as kwargs."""

    async def start(**config: Any) -> tuple[str, Frigate]:
        prefix = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{prefix}fr"
        frigate_cfg = {"topic_prefix": fp, **config.pop("frigate", {})}
        cfg = {"frigate": frigate_cfg, "users": {"admin": {"role": "admin"}}, **config}
        frigate = Frigate(mqtt, fp)
        await frigate.available("online")
        worker = worker_factory(broker, prefix=prefix, config=cfg)
        worker.start()
        await worker.wait_online(mqtt)
        start.worker = worker  # type: ignore[attr-defined]
        return prefix, frigate

    return start


def oid(start: float) -> str:
    return f"{start:.6f}-{uuid.uuid4().hex[:6]}"


# -- faces, names and sub labels ------------------------------------------------------------


async def test_face_guesses_are_not_names(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 60
    person = oid(t0)
    await frigate.event("new", tracked_object(person, CAM, "person", t0, t0 + 1))
    # Frigate's face processor publishes every attempt, whatever the score; Frigate names
    # the person only when the score reaches its threshold (0.9 by default).
    await frigate.update(face(person, "Alice", 0.62))
    await frigate.update(face(person, None, 0.0))  # a tie: no guess this time
    await frigate.update({**face(person, "unknown", 0.3)})  # imitators use the literal

    async def guessed() -> Any:
        found = await tool(mqtt, prefix, "search_objects", label="person")
        return found["objects"] and found["objects"][0].get("face_guess")

    guess = await eventually(guessed, what="the face guess in the history")
    assert guess["name"] == "Alice" and guess["score"] == 0.62
    assert (await tool(mqtt, prefix, "search_objects", sub_label="Alice"))["count"] == 0
    assert (await tool(mqtt, prefix, "search_objects", sub_label="unknown"))["count"] == 0
    live = await tool(mqtt, prefix, "get_live_context", camera=CAM)
    (obj,) = live["objects"]
    assert "sub_label" not in obj
    assert obj["face_guess"]["name"] == "Alice"

    # Now Frigate is sure: the name arrives as the sub label of an events message.
    named = tracked_object(person, CAM, "person", t0, t0 + 5, sub_label=["Alice", 0.93])
    await frigate.event("update", named)

    async def named_found() -> Any:
        return (await tool(mqtt, prefix, "search_objects", sub_label="Alice"))["count"]

    await eventually(named_found, what="Alice as a recognised name")
    (obj,) = (await tool(mqtt, prefix, "get_live_context", camera=CAM))["objects"]
    assert obj["sub_label"] == "Alice" and "face_guess" not in obj


async def test_a_cleared_sub_label_is_cleared(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 60
    car = oid(t0)
    await frigate.event("new", tracked_object(car, CAM, "car", t0, t0 + 1, sub_label=["Bob", 0.91]))

    async def bob() -> Any:
        return (await tool(mqtt, prefix, "search_objects", sub_label="Bob"))["count"]

    await eventually(bob, what="Bob stored")
    # `POST /api/events/<id>/sub_label` with an empty name: the next message says [null, null].
    await frigate.event(
        "update", tracked_object(car, CAM, "car", t0, t0 + 9, sub_label=[None, None])
    )

    async def gone() -> Any:
        return (await tool(mqtt, prefix, "search_objects", sub_label="Bob"))["count"] == 0

    await eventually(gone, what="Bob cleared from the history")
    (obj,) = (await tool(mqtt, prefix, "get_live_context", camera=CAM))["objects"]
    assert "sub_label" not in obj
    # A plain null (never set) says nothing: a later name stays until Frigate clears it.
    await frigate.event(
        "update", tracked_object(car, CAM, "car", t0, t0 + 12, sub_label=["Eve", 0.95])
    )
    await frigate.event("update", tracked_object(car, CAM, "car", t0, t0 + 14, sub_label=None))

    async def eve() -> Any:
        return (await tool(mqtt, prefix, "search_objects", sub_label="Eve"))["count"]

    await eventually(eve, what="Eve kept")


# -- Frigate going away ------------------------------------------------------------------


@pytest.mark.sqlite_store  # reads the worker's SQLite file itself
async def test_frigate_stopping_ends_what_was_open(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 120
    car, review = oid(t0), oid(t0 + 0.5)
    await frigate.event("new", tracked_object(car, CAM, "car", t0, t0 + 1, current=["porch"]))
    await frigate.review(
        "new",
        review_object(review, CAM, t0 + 0.5, "alert", detections=[car], objects=["car"], zones=[]),
    )

    async def stored() -> Any:
        found = await tool(mqtt, prefix, "search_objects", label="car")
        return found["count"] == 1 and found["objects"][0]["end_local"] == "still in view"

    await eventually(stored, what="the open car")
    went = time.time()
    await frigate.available("stopped")  # a clean stop: Frigate closes them in its DB only

    async def ended() -> Any:
        (obj,) = (await tool(mqtt, prefix, "search_objects", label="car"))["objects"]
        return obj if obj["end_local"] != "still in view" else None

    obj = await ended_within(ended)
    assert "Frigate went offline" in obj["end_note"]
    recap = await tool(
        mqtt, prefix, "get_recap", after=_local(t0 - 60), before=_local(time.time() + 60)
    )
    (item,) = recap["items"]
    assert item["end_local"] != "ongoing" and "Frigate went offline" in item["end_note"]
    assert went - 5 <= _stored_end(start_worker_db(setup), car) <= time.time() + 1
    await frigate.available("online")
    assert (await tool(mqtt, prefix, "get_live_context", camera=CAM))["objects"] == []


async def ended_within(check: Callable[[], Awaitable[Any]]) -> Any:
    return await eventually(check, what="the open event ended")


def start_worker_db(setup: Any) -> str:
    return str(setup.worker.workdir / "lookout.db")


def _stored_end(db: str, event_id: str) -> float:
    with sqlite3.connect(db) as conn:
        (end,) = conn.execute("SELECT end_time FROM events WHERE id = ?", (event_id,)).fetchone()
    return float(end)


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))


async def test_frigate_gone_while_lookout_was_down(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 300
    dog = oid(t0)
    await frigate.event("new", tracked_object(dog, CAM, "dog", t0, t0 + 1))

    async def stored() -> Any:
        return (await tool(mqtt, prefix, "search_objects", label="dog"))["count"]

    await eventually(stored, what="the dog")
    worker = setup.worker
    worker.stop()
    await frigate.available("offline")  # Frigate's last will, retained, while lookout is down
    worker.start()
    await worker.wait_online(mqtt)

    async def ended() -> Any:
        (obj,) = (await tool(mqtt, prefix, "search_objects", label="dog"))["objects"]
        return obj if obj["end_local"] != "still in view" else None

    obj = await ended_within(ended)
    assert "Frigate went offline" in obj["end_note"]


# -- zones, confirmations, reading states ----------------------------------------------------


async def test_zone_names_as_frigate_allows_them(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 60
    person = oid(t0)
    zones = ["Vorgarten Süd", "porch", "前庭"]
    obj = tracked_object(person, CAM, "person", t0, t0 + 1, current=[*zones], entered=[*zones])
    obj["current_zones"].append("bad/zone")  # a topic separator: the one kind refused
    await frigate.event("new", obj)

    async def found() -> Any:
        return (await tool(mqtt, prefix, "search_objects", zones=["Vorgarten Süd"]))["count"]

    await eventually(found, what="a search by a zone with a space and an umlaut")
    (row,) = (await tool(mqtt, prefix, "search_objects", zones=["前庭"]))["objects"]
    assert row["zones"] == zones
    (live,) = (await tool(mqtt, prefix, "get_live_context", camera=CAM))["objects"]
    assert live["zones"] == zones
    assert (await health(mqtt, prefix))["frigate"]["messages"]["rejected_zone_names"] == 1


async def test_confirmed_means_frigate_confirmed(setup, mqtt):
    prefix, frigate = await setup()
    await frigate.state(CAM, "detect", "ON")  # the cache already holds the asked value

    async def known() -> Any:
        states = (await tool(mqtt, prefix, "get_camera_state", camera=CAM))["cameras"][CAM]
        return states["settings"].get("detect") == "ON"

    await eventually(known, what="the retained detect state")
    # Frigate says nothing (it refuses some commands silently): not confirmed.
    quiet = await tool(mqtt, prefix, "set_camera_state", camera=CAM, feature="detect", value="on")
    assert quiet["cameras"][CAM] == "unconfirmed"
    assert "did not confirm" in quiet["note"]

    # Frigate answers the command with its state: confirmed.
    sets = await mqtt.subscribe(f"{frigate.p}/{CAM}/detect/set")

    async def answer() -> None:
        msg = await next_message(sets)
        await frigate.state(CAM, "detect", msg.payload.decode())

    answering = asyncio.create_task(answer())
    ok = await tool(mqtt, prefix, "set_camera_state", camera=CAM, feature="detect", value="ON")
    await answering
    assert ok["cameras"][CAM] == "confirmed"

    # Frigate is offline: whatever the cache holds, nothing can confirm.
    await frigate.available("offline")
    off = await tool(mqtt, prefix, "set_camera_state", camera=CAM, feature="detect", value="ON")
    assert off["cameras"][CAM] == "unconfirmed"
    assert "offline" in off["note"]


async def test_camera_states_can_be_read_and_follow_frigates_runtime_truth(setup, mqtt):
    asks = await mqtt.subscribe("+/onConnect")
    prefix, frigate = await setup()
    await frigate.state(CAM, "recordings", "ON")  # Frigate republishes its config value
    ask = await next_message(asks)
    assert ask.topic == f"{frigate.p}/onConnect"
    # ... and its runtime truth on camera_activity, when asked.
    activity = {CAM: {"motion": False, "objects": [], "config": {"record": False, "detect": True}}}
    await mqtt.publish(f"{frigate.p}/camera_activity", json.dumps(activity).encode(), qos=1)

    async def read() -> Any:
        cams = (await tool(mqtt, prefix, "get_camera_state"))["cameras"]
        settings = cams.get(CAM, {}).get("settings", {})
        return settings if settings.get("recordings") == "OFF" else None

    settings = await eventually(read, what="recordings OFF from camera_activity")
    assert settings["detect"] == "ON"


# -- the frame a model judges ----------------------------------------------------------------


async def test_the_frame_is_the_scene_fresh(setup, mqtt):
    async with FakeLLM() as fake, FakeFrigateApi() as api:
        fp_probe = f"lk{uuid.uuid4().hex[:8]}fr"
        # A retained snapshot from days ago, there before lookout subscribes.
        await mqtt.publish(f"{fp_probe}/{CAM}/person/snapshot", SNAPSHOT_JPEG, qos=1, retain=True)
        llm = {"providers": {"fake": {"base_url": fake.base_url, "model": "m", "max_retries": 0}}}
        prefix, _ = await setup(llm=llm, frigate={"topic_prefix": fp_probe})
        live = await tool(mqtt, prefix, "get_live_context", camera=CAM)
        assert live["frame"]["kind"] == "crop of one object"
        assert live["frame"]["age_s"] is None  # retained: its age is unknown

        # Frigate's latest.jpg, when frigate.url is set, beats the snapshot.
        api.frames[CAM] = SNAPSHOT_JPEG
        prefix2, _ = await setup(
            llm=llm, frigate={"topic_prefix": fp_probe, "url": api.url, "latest_cache_s": 0}
        )
        fetched = await tool(mqtt, prefix2, "get_live_context", camera=CAM)
        assert fetched["frame"]["source"] == "http"
        assert fetched["frame"]["kind"] == "whole scene"
        assert fetched["frame"]["age_s"] == 0
        api.offline_cameras.add(CAM)
        offline = await tool(mqtt, prefix2, "get_live_context", camera=CAM)
        assert offline["frame"]["age_s"] is None
        assert any("offline" in n for n in offline["frame"]["notes"])

        # A fresh frame on lookout's frame topic beats both.
        await mqtt.publish(f"{prefix2}/camera/{CAM}/frame", SNAPSHOT_JPEG, qos=0)

        async def live_frame() -> Any:
            out = await tool(mqtt, prefix2, "get_live_context", camera=CAM)
            return out["frame"]["source"] == "live"

        await eventually(live_frame, what="the frame-topic frame")


# -- history from before lookout ------------------------------------------------------------


def _history(now: float, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` events over the last three days, one review per 10 events."""
    events, reviews = [], []
    for i in range(n):
        start = now - 3 * 86_400 + i * (3 * 86_400 - 3600) / n
        label = "person" if i % 3 else "car"
        name = "Carol" if i == 7 else None
        events.append(
            api_event(
                f"{start:.6f}-h{i:05d}", CAM, label, start, start + 20,
                zones=["porch"], sub_label=name, sub_label_score=0.95 if name else None,
            )
        )  # fmt: skip
        if i % 10 == 0:
            reviews.append(
                api_review(
                    f"{start + 0.2:.6f}-r{i:05d}", CAM, start + 0.2, start + 30,
                    detections=[events[-1]["id"]], objects=[f"{label}-verified"] if name else [label],
                )
            )  # fmt: skip
    return events, reviews


@pytest.mark.sqlite_store  # reads the worker's SQLite file itself
async def test_history_is_imported_from_frigates_api(setup, mqtt):
    now = time.time()
    async with FakeFrigateApi() as api:
        api.events, api.reviews = _history(now, 1234)
        # Newest first, page 1 ends at the 500th row: event 734 of 1234. Its twin shares
        # its start, so the page ends between the two (strict bounds must not skip one).
        twin = dict(api.events[734], id=api.events[734]["id"] + "x")
        api.events.append(twin)
        prefix, _ = await setup(frigate={"url": api.url, "import_retry_s": 0.5})

        async def done() -> Any:
            state = (await health(mqtt, prefix))["frigate"]["history_import"]
            return state if state["state"] == "done" else None

        state = await eventually(done, timeout=60, what="the history import")
        assert state["events"] == 1235 and state["reviews"] == 124
        assert api.count("/api/events") >= 3  # pages of 500, walked back by `before`
        assert all(
            q.get("include_thumbnails") == "0" for p, q in api.requests if p == "/api/events"
        )
        with sqlite3.connect(start_worker_db(setup)) as conn:
            (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert count == 1235
        carol = await tool(mqtt, prefix, "search_objects", sub_label="Carol")
        assert carol["count"] == 1 and "notes" not in carol
        recap = await tool(
            mqtt, prefix, "get_recap", after=_local(now - 3 * 86_400 - 60), before=_local(now)
        )
        assert recap["alerts"] == 124
        assert {tuple(i["objects"]) for i in recap["items"]} <= {("person",), ("car",)}


async def test_history_import_survives_a_frigate_that_is_down_slow_or_garbled(setup, mqtt):
    now = time.time()
    api = FakeFrigateApi(mode="garbage")
    await api.start()
    try:
        api.events, api.reviews = _history(now, 30)
        prefix, _ = await setup(
            frigate={"url": api.url, "import_retry_s": 0.5, "api_timeout_s": 0.5}
        )

        async def state_is(expected: str) -> Any:
            async def check() -> Any:
                s = (await health(mqtt, prefix))["frigate"]["history_import"]
                return s if s["state"] == expected else None

            return await eventually(check, timeout=30, what=f"import state {expected}")

        garbled = await state_is("retrying")
        assert garbled["error"].startswith("not_json")
        answer = await tool(mqtt, prefix, "search_objects", label="person")
        assert any("importing Frigate's history failed" in n for n in answer["notes"])

        api.mode, api.delay = "slow", 2.0
        slow = await eventually(
            lambda: _error_startswith(mqtt, prefix, "timeout"), timeout=30, what="a timeout"
        )
        assert slow
        api.mode, api.delay = "ok", 0.0
        await api.stop()  # down
        await eventually(
            lambda: _error_startswith(mqtt, prefix, "unreachable"), timeout=30, what="down"
        )
        assert (await health(mqtt, prefix))["broker"]["connected"]  # lookout keeps working
        await api.start()
        await state_is("done")
        assert (await tool(mqtt, prefix, "search_objects", label="car"))["count"] == 10
    finally:
        await api.stop()


async def _error_startswith(mqtt: MqttTestClient, prefix: str, reason: str) -> bool:
    s = (await health(mqtt, prefix))["frigate"]["history_import"]
    return bool(s["error"] and s["error"].startswith(reason))


async def test_without_a_url_answers_say_where_history_starts(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 30
    await frigate.event("new", tracked_object(oid(t0), CAM, "cat", t0, t0 + 1))

    async def noted() -> Any:
        out = await tool(mqtt, prefix, "search_objects", after=_local(t0 - 7 * 86_400))
        return out["count"] and out.get("notes")

    (note,) = await eventually(noted, what="a note on where the history starts")
    assert "history starts" in note and "frigate.url" in note


# -- reviews as Frigate sends them -----------------------------------------------------------


@pytest.mark.sqlite_store  # reads the worker's SQLite file itself
async def test_reviews_keep_every_detection_and_plain_labels(setup, mqtt):
    prefix, frigate = await setup()
    t0 = time.time() - 200
    rid = oid(t0)
    ids = [oid(t0 + i) for i in range(150)]
    review = review_object(
        rid, CAM, t0, "alert", detections=ids, objects=["person-verified", "car"],
        zones=["porch"], sub_labels=["Alice"], end=t0 + 100,
    )  # fmt: skip
    await frigate.review("end", review)

    async def recap() -> Any:
        out = await tool(
            mqtt, prefix, "get_recap", after=_local(t0 - 60), before=_local(time.time() + 60)
        )
        return out["items"]

    (item,) = await eventually(recap, what="the review")
    assert item["objects"] == ["person", "car"]
    with sqlite3.connect(start_worker_db(setup)) as conn:
        (stored,) = conn.execute("SELECT detections FROM reviews WHERE id = ?", (rid,)).fetchone()
    assert len(json.loads(stored)) == 150

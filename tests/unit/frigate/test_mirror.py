"""The Frigate mirror: cameras, zones, states, live objects, detections, garbage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from service.frigate.mirror import FrigateMirror
from service.frigate.model import Detection
from service.frigate.payloads import parse_sub_label
from service.mqtt.topics import TopicMap
from service.settings import CameraSettings, FrigateSettings
from service.store.db import create_engine
from service.store.events import EventStore
from tests.frigate_replay import CAMERA_ZONES, PROFILE, build_session, tracked_object

T0 = 1_760_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    events = EventStore(engine)
    await events.start()
    yield events
    await events.close()
    await engine.dispose()


def make_mirror(
    store: EventStore | None = None, clock: Clock | None = None, **settings: Any
) -> FrigateMirror:
    return FrigateMirror(
        FrigateSettings(**settings), TopicMap(), store, clock=clock or Clock(T0 + 300)
    )


def event(kind: str, after: dict[str, Any], before: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"type": kind, "before": before or after, "after": after}).encode()


def obj(oid: str = f"{T0:.6f}-abc123", camera: str = "front_door", **kw: Any) -> dict[str, Any]:
    kw.setdefault("label", "person")
    label = kw.pop("label")
    start = kw.pop("start", T0)
    frame = kw.pop("frame", T0 + 1)
    return tracked_object(oid, camera, label, start, frame, **kw)


# -- the replayed session ----------------------------------------------------------


async def replay(store: EventStore | None = None) -> tuple[FrigateMirror, Any]:
    session = build_session(T0)
    mirror = make_mirror(store)
    for topic, payload, retain in session.messages:
        mirror.handle(topic, payload, retain)
    return mirror, session


async def test_replay_learns_cameras_zones_and_states() -> None:
    mirror, session = await replay()
    cameras = {c.id: c for c in mirror.cameras()}
    assert set(cameras) == set(CAMERA_ZONES)  # `porch` from a zone count topic is no camera
    for camera, zones in CAMERA_ZONES.items():
        assert [z.id for z in cameras[camera].zones] == sorted(zones)
        assert cameras[camera].last_seen is not None
    assert cameras["front_door"].friendly_name == "Front Door"
    assert mirror.state("backyard", "recordings") == "OFF"
    assert mirror.state("driveway", "audio") == "OFF"
    assert mirror.state("front_door", "detect") == "ON"
    assert mirror.state("front_door", "motion_threshold") == "30"
    assert mirror.state("front_door", "nope") is None
    assert cameras["driveway"].states["birdseye_mode"] == "OBJECTS"
    assert mirror.profile() == PROFILE
    assert mirror.available() == "online"
    stats = mirror.stats()
    assert not [k for k in stats if k.startswith("rejected_")]
    topics = [topic for topic, _, _ in session.messages]
    assert stats["events"] == topics.count("frigate/events") == 17
    assert stats["reviews"] == topics.count("frigate/reviews") == 8
    assert stats["updates_face"] == stats["updates_lpr"] == stats["updates_description"] == 1


async def test_replay_live_objects() -> None:
    mirror, session = await replay()
    front = mirror.live_objects("front_door")
    assert [o.id for o in front] == [session.ids["visitor"]]
    assert front[0].current_zones == ("porch",)
    assert front[0].entered_zones == ("walkway", "porch")
    (car,) = mirror.live_objects("driveway")
    assert car.id == session.ids["car"]
    assert car.stationary is True
    assert (car.sub_label, car.sub_label_score) == ("Bob's Car", 0.93)
    assert car.plate == "ABC123"
    assert car.label == "car"
    assert mirror.live_objects("backyard") == []
    assert mirror.live_objects("unknown") == []


async def test_replay_history(store: EventStore) -> None:
    _, session = await replay(store)
    await store.flush()
    assert await store.count() == 5
    alice = await store.get(session.ids["alice"])
    assert alice is not None
    assert (alice.camera, alice.label, alice.sub_label, alice.face) == (
        "front_door",
        "person",
        "Alice",
        "Alice",
    )
    assert alice.sub_label_score == 0.91
    assert alice.zones == ("walkway", "porch")
    assert alice.description is not None and "parcel" in alice.description
    assert alice.has_clip and alice.has_snapshot
    assert alice.end_time == pytest.approx(T0 + 91)
    car = await store.get(session.ids["car"])
    assert car is not None
    assert (car.plate, car.sub_label, car.end_time) == ("ABC123", "Bob's Car", None)
    assert car.start_time == pytest.approx(T0 + 30)
    rows = await store.search(sub_labels=["alice"])
    assert [r.id for r in rows] == [session.ids["alice"]]
    rows = await store.search(zones=["patio"])
    assert [r.id for r in rows] == [session.ids["dog"]]
    reviews = {r.id: r for r in await store.reviews()}
    assert len(reviews) == 3
    front = reviews[session.reviews["front"]]
    assert front.severity == "alert"
    assert front.title == "Parcel delivered by Alice"
    assert front.summary is not None and front.summary.startswith("Alice walks")
    assert front.short_summary == "Alice delivered a parcel."
    assert front.threat_level == 0
    assert front.sub_labels == ("Alice",)
    assert front.zones == ("walkway", "porch")
    assert front.detections == (session.ids["alice"],)
    assert reviews[session.reviews["driveway"]].end_time is None
    assert reviews[session.reviews["driveway"]].sub_labels == ("Bob's Car",)


async def test_replay_survives_any_prefix() -> None:
    session = build_session(T0, frigate_prefix="nvr")
    mirror = FrigateMirror(FrigateSettings(topic_prefix="nvr"), TopicMap(frigate_prefix="nvr"))
    for message in session.messages:
        mirror.handle(*message)
    assert [c.id for c in mirror.cameras()] == sorted(CAMERA_ZONES)
    assert {f for f, _ in mirror.subscriptions()} >= {"nvr/events", "nvr/+/+/state"}


# -- payload normalisation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["Alice", 0.91], ("Alice", 0.91)),
        (["Alice"], ("Alice", None)),
        ("Bob", ("Bob", None)),
        (None, None),
        ([], None),
        ([None, 0.5], (None, None)),  # cleared through Frigate's API
        ([None, None], (None, None)),
        ({"name": "x"}, None),
        (["  ", 0.5], (None, None)),
        (["unknown", 0.4], None),  # never a name
        (["Eve", "high"], ("Eve", None)),
        (["Eve", float("nan")], ("Eve", None)),
    ],
)
def test_sub_label_shapes(raw: Any, expected: tuple[str | None, float | None] | None) -> None:
    assert parse_sub_label(raw) == expected


def test_live_object_sub_label_from_plain_string() -> None:
    mirror = make_mirror()
    mirror.handle("frigate/events", event("new", obj(sub_label="Carol")), False)  # type: ignore[arg-type]
    (live,) = mirror.live_objects("front_door")
    assert (live.sub_label, live.sub_label_score) == ("Carol", None)


# -- detections ----------------------------------------------------------------------


def test_detections_say_what_wakes_a_watch() -> None:
    mirror = make_mirror()
    seen: list[Detection] = []
    unsubscribe = mirror.subscribe_detections(seen.append)
    oid = f"{T0:.6f}-d3t3ct"
    steps = [
        ("new", obj(oid, frame=T0 + 1)),
        ("update", obj(oid, frame=T0 + 5, current=["walkway"], entered=["walkway"])),
        ("update", obj(oid, frame=T0 + 9, current=["walkway"], entered=["walkway"], score=0.9)),
        (
            "update",
            obj(oid, frame=T0 + 20, current=["walkway"], entered=["walkway"], stationary=True),
        ),
        (
            "update",
            obj(oid, frame=T0 + 40, current=["walkway"], entered=["walkway"], stationary=True),
        ),
        ("update", obj(oid, frame=T0 + 50, current=["walkway"], entered=["walkway"])),
        ("end", obj(oid, frame=T0 + 60, entered=["walkway"], end=T0 + 60)),
    ]
    for kind, after in steps:
        mirror.handle("frigate/events", event(kind, after), False)
    unsubscribe()
    mirror.handle("frigate/events", event("new", obj(f"{T0:.6f}-other1")), False)
    assert [d.kind for d in seen] == [
        "new",
        "update",
        "update",
        "update",
        "update",
        "update",
        "end",
    ]
    assert [d.wakes for d in seen] == [True, True, False, False, False, True, False]
    assert seen[1].new_zones == ("walkway",) and seen[1].entered_new_zone
    assert seen[2].new_zones == () and not seen[2].entered_new_zone
    assert [d.became_active for d in seen] == [False] * 5 + [True, False]
    assert seen[0].first_seen and not seen[1].first_seen
    # The ended object is gone; the one after unsubscribing is tracked but was not reported.
    assert [o.id for o in mirror.live_objects("front_door")] == [f"{T0:.6f}-other1"]


def test_parked_object_seen_first_after_restart_does_not_wake() -> None:
    mirror = make_mirror()
    seen: list[Detection] = []
    mirror.subscribe_detections(seen.append)
    parked = obj(current=["parking"], entered=["parking"], stationary=True, label="car")
    mirror.handle("frigate/events", event("update", parked, before=parked), False)
    (first,) = seen
    assert first.first_seen and first.stationary
    assert not first.entered_new_zone  # `before` says it was already in the zone
    assert not first.wakes


async def test_detection_stream_filters_and_bounds() -> None:
    mirror = make_mirror()
    with mirror.detections("driveway", maxsize=2) as stream:
        mirror.handle("frigate/events", event("new", obj(camera="front_door")), False)
        for i in range(3):
            car = obj(f"{T0:.6f}-car00{i}", camera="driveway", label="car")
            mirror.handle("frigate/events", event("new", car), False)
        async with asyncio.timeout(5):
            first = await stream.get()
        assert first.object_id == f"{T0:.6f}-car001"  # the oldest was dropped
        assert stream.dropped == 1
        assert stream.get_nowait() is not None
        assert stream.get_nowait() is None
        waiter = asyncio.create_task(stream.get(), name="test-stream-get")
        mirror.handle(
            "frigate/events", event("new", obj(f"{T0:.6f}-car009", camera="driveway")), False
        )
        async with asyncio.timeout(5):
            assert (await waiter).object_id == f"{T0:.6f}-car009"
    mirror.handle("frigate/events", event("new", obj(f"{T0:.6f}-late00", camera="driveway")), False)
    assert stream.get_nowait() is None  # unsubscribed on exit


def test_subscriber_error_is_contained() -> None:
    mirror = make_mirror()

    def broken(_: Detection) -> None:
        raise RuntimeError("subscriber bug")

    mirror.subscribe_detections(broken)
    mirror.handle("frigate/events", event("new", obj()), False)
    assert mirror.stats()["rejected_subscriber_error"] == 1
    assert len(mirror.live_objects("front_door")) == 1


# -- expiry and availability ------------------------------------------------------------


def test_silent_objects_expire() -> None:
    clock = Clock(T0)
    mirror = make_mirror(clock=clock, object_ttl_s=60)
    mirror.handle("frigate/events", event("new", obj(f"{T0:.6f}-old000")), False)
    clock.now += 45
    mirror.handle("frigate/events", event("new", obj(f"{T0:.6f}-new000")), False)
    assert len(mirror.live_objects("front_door")) == 2
    clock.now += 30
    assert [o.id for o in mirror.live_objects("front_door")] == [f"{T0:.6f}-new000"]
    clock.now += 61
    mirror.handle("frigate/available", b"online", True)  # any message triggers the sweep
    assert mirror.stats()["live_objects"] == 0


def test_availability_change_forgets_live_objects() -> None:
    mirror = make_mirror()
    mirror.handle("frigate/available", b"online", True)
    mirror.handle("frigate/events", event("new", obj()), False)
    mirror.handle("frigate/available", b"online", True)  # reconnect: same value, keep
    assert len(mirror.live_objects("front_door")) == 1
    mirror.handle("frigate/available", b"offline", True)
    assert mirror.available() == "offline"
    assert mirror.live_objects("front_door") == []
    mirror.handle("frigate/available", b"stopped", True)
    assert mirror.available() == "stopped"


def test_profile_none_means_no_profile() -> None:
    mirror = make_mirror()
    assert mirror.profile() is None
    mirror.handle("frigate/profile/state", b"home", True)
    assert mirror.profile() == "home"
    mirror.handle("frigate/profile/state", b"none", True)
    assert mirror.profile() is None


# -- state waits -------------------------------------------------------------------------


async def test_wait_state_sees_the_echo() -> None:
    mirror = make_mirror()
    mirror.handle("frigate/front_door/detect/state", b"OFF", True)
    waiter = asyncio.create_task(
        mirror.wait_state("front_door", "detect", "ON", timeout=5), name="test-wait-state"
    )
    await asyncio.sleep(0)  # let the waiter register
    mirror.handle("frigate/front_door/detect/state", b"OFF", True)
    assert not waiter.done()
    mirror.handle("frigate/front_door/detect/state", b"ON", True)
    assert await waiter == "ON"
    assert len(mirror._waiters) == 0


async def test_wait_state_current_value_predicate_and_timeout() -> None:
    mirror = make_mirror()
    mirror.handle("frigate/front_door/motion_threshold/state", b"25", True)
    assert await mirror.wait_state("front_door", "motion_threshold", "25", timeout=1) == "25"
    got = await mirror.wait_state(
        "front_door", "motion_threshold", lambda v: int(v) > 20, timeout=1
    )
    assert got == "25"
    assert await mirror.wait_state("front_door", "detect", "ON", timeout=0.01) is None
    assert len(mirror._waiters) == 0


async def test_wait_profile() -> None:
    mirror = make_mirror()
    waiter = asyncio.create_task(mirror.wait_profile("home", timeout=5), name="test-wait-profile")
    await asyncio.sleep(0)  # let the waiter register
    mirror.handle("frigate/profile/state", b"away", True)
    assert not waiter.done()
    mirror.handle("frigate/profile/state", b"home", True)
    assert await waiter == "home"
    mirror.handle("frigate/profile/state", b"none", True)
    assert await mirror.wait_profile(lambda v: v.lower() == "none", timeout=1) == "none"
    assert await mirror.wait_profile("home", timeout=0.01) is None


# -- names -----------------------------------------------------------------------------


def test_resolve_names_from_settings_and_fallbacks() -> None:
    mirror = make_mirror(
        cameras={
            "front_door": CameraSettings(
                friendly_name="Front Entrance", zones={"porch": "Front Porch"}
            ),
            "garage": CameraSettings(),
        }
    )
    mirror.handle(
        "frigate/events", event("new", obj(camera="back_yard", current=["hot_tub"])), False
    )
    assert [c.id for c in mirror.cameras()] == ["back_yard", "front_door", "garage"]
    assert mirror.camera("garage") is not None and mirror.camera("garage").last_seen is None  # type: ignore[union-attr]
    assert mirror.resolve_camera("front entrance") == "front_door"
    assert mirror.resolve_camera("Front Door") == "front_door"
    assert mirror.resolve_camera("FRONT-DOOR") == "front_door"
    assert mirror.resolve_camera("Back Yard") == "back_yard"
    assert mirror.resolve_camera("attic") is None
    assert mirror.resolve_camera("") is None
    assert mirror.resolve_zone("front porch") == ["porch"]
    assert mirror.resolve_zone("PORCH", ["front_door"]) == ["porch"]
    assert mirror.resolve_zone("porch", ["back_yard"]) == []
    assert mirror.resolve_zone("Hot Tub") == ["hot_tub"]
    assert mirror.resolve_zone("pool") == []
    info = mirror.camera("front_door")
    assert info is not None
    assert info.friendly_name == "Front Entrance"
    assert info.to_dict()["zones"] == [{"id": "porch", "friendly_name": "Front Porch"}]


def _config_transport(status: int, body: Any) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/api/config"
        return httpx2.Response(status, json=body)

    return httpx2.MockTransport(handler)


FRIGATE_CONFIG = {
    "mqtt": {"topic_prefix": "frigate"},
    "cameras": {
        "front_door": {
            "friendly_name": "Haustür",
            "enabled": True,
            "zones": {
                "porch": {"coordinates": "0,0,1,1", "friendly_name": "Veranda"},
                "walkway": {},
                "Vorgarten Süd": {"friendly_name": "Vorgarten"},  # Frigate takes any key
                "a/b": {},  # not a topic level: the one kind refused
            },
        },
        "driveway": {"enabled": True, "zones": {}},
        "bad/name": {"friendly_name": "nope"},
    },
}


async def test_import_api_config_adds_names_settings_win() -> None:
    mirror = make_mirror(
        url="http://frigate:5000",
        cameras={"driveway": CameraSettings(friendly_name="Einfahrt")},
    )
    assert await mirror.import_api_config(transport=_config_transport(200, FRIGATE_CONFIG))
    assert [c.id for c in mirror.cameras()] == ["driveway", "front_door"]
    assert mirror.camera("front_door").friendly_name == "Haustür"  # type: ignore[union-attr]
    assert mirror.camera("driveway").friendly_name == "Einfahrt"  # type: ignore[union-attr]
    assert mirror.resolve_zone("veranda") == ["porch"]
    zones = mirror.camera("front_door").zones  # type: ignore[union-attr]
    assert [(z.id, z.friendly_name) for z in zones] == [
        ("Vorgarten Süd", "Vorgarten"),
        ("porch", "Veranda"),
        ("walkway", "Walkway"),
    ]
    assert mirror.resolve_zone("vorgarten") == ["Vorgarten Süd"]


@pytest.mark.parametrize(
    "transport",
    [
        _config_transport(500, {"message": "boom"}),
        _config_transport(200, {"cameras": "not a mapping"}),
        httpx2.MockTransport(lambda _: (_ for _ in ()).throw(httpx2.ConnectError("refused"))),
    ],
)
async def test_import_api_config_failure_is_quiet(transport: httpx2.MockTransport) -> None:
    mirror = make_mirror(url="http://user:secret@frigate:5000")
    assert await mirror.import_api_config(transport=transport) is False
    assert mirror.cameras() == []


async def test_import_api_config_without_url_does_nothing() -> None:
    assert await make_mirror().import_api_config() is False


# -- garbage -----------------------------------------------------------------------------

GARBAGE: list[bytes] = [
    b"",
    b"\xff\xfe\x00garbage",
    b"not json",
    b"[]",
    b"null",
    b"42",
    b'{"type": "new"}',
    b'{"type": "bogus", "after": {}}',
    b'{"type": "new", "after": {"id": 123, "camera": "c", "label": "person", "start_time": 1}}',
    b'{"type": "new", "after": {"id": "a b", "camera": "c", "label": "person", "start_time": 1}}',
    b'{"type": "new", "after": {"id": "x", "camera": "a/b", "label": "person", "start_time": 1}}',
    b'{"type": "new", "after": {"id": "x", "camera": "c", "label": "person", "start_time": NaN}}',
    b'{"type": "new", "after": {"id": "x", "camera": "events", "label": "p", "start_time": 1}}',
    b'{"type": "face", "id": ["x"], "name": "Bob"}',
    b'{"type": "update", "after": {"id": "r", "camera": "c", "start_time": 1}}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"type": "new", "after": "' + b"x" * 2_000_000 + b'"}',
    b"\x00" * 100,
    b"ON\n\x07",
]


def garbage_topics() -> list[str]:
    return [
        "frigate/events",
        "frigate/reviews",
        "frigate/tracked_object_update",
        "frigate/available",
        "frigate/profile/state",
        "frigate/front_door/detect/state",
        "frigate/front_door/zone/porch/state",
        "frigate/events/detect/state",
        "frigate/profile/x/state",
        "frigate/somewhere/else",
    ]


async def test_garbage_on_every_topic_is_counted_never_raised(store: EventStore) -> None:
    mirror = make_mirror(store)
    for topic in garbage_topics():
        for payload in GARBAGE:
            mirror.handle(topic, payload, False)
    stats = mirror.stats()
    rejected = sum(v for k, v in stats.items() if k.startswith("rejected_"))
    assert rejected >= 6 * len(GARBAGE) - 20
    assert stats.get("rejected_handler_error", 0) == 0
    assert stats["messages"] == len(GARBAGE) * len(garbage_topics())
    assert {c.id for c in mirror.cameras()} <= {"front_door", "c"}
    assert "events" not in {c.id for c in mirror.cameras()}
    await store.flush()
    assert await store.count() == 0
    assert await store.count_reviews() == 0
    # Still working afterwards.
    mirror.handle("frigate/events", event("new", obj()), False)
    await store.flush()
    assert await store.count() == 1
    assert len(mirror.live_objects("front_door")) == 1


def test_unknown_update_types_are_ignored_not_rejected() -> None:
    mirror = make_mirror()
    payload = json.dumps({"type": "audio_transcript", "id": f"{T0}-x", "camera": "front_door"})
    mirror.handle("frigate/tracked_object_update", payload.encode(), False)
    assert mirror.stats()["ignored_update_type"] == 1


def test_subscriptions_and_snapshot_pattern() -> None:
    mirror = make_mirror()
    assert mirror.subscriptions() == [
        ("frigate/events", 1),
        ("frigate/reviews", 1),
        ("frigate/tracked_object_update", 1),
        ("frigate/available", 1),
        ("frigate/profile/state", 1),
        ("frigate/+/+/state", 1),
        ("frigate/+/zone/+/state", 1),
        ("frigate/+/motion", 1),
        ("frigate/camera_activity", 1),
    ]
    assert mirror.snapshot_pattern.match("frigate/driveway/car/snapshot") == {
        "camera": "driveway",
        "label": "car",
    }


def test_motion_state_follows_frigate_and_ignores_repeats() -> None:
    clock = Clock(T0)
    mirror = make_mirror(clock=clock)
    seen: list[tuple[str, bool, float]] = []
    unsubscribe = mirror.subscribe_motion(lambda m: seen.append((m.camera, m.active, m.since)))
    assert mirror.motion("front_door") is None
    mirror.handle("frigate/front_door/motion", b"ON", False)
    clock.now = T0 + 5
    mirror.handle("frigate/front_door/motion", b"ON", False)  # a repeat: no change
    clock.now = T0 + 40
    mirror.handle("frigate/front_door/motion", b"OFF", False)
    mirror.handle("frigate/front_door/motion", b"maybe", False)
    assert seen == [("front_door", True, T0), ("front_door", False, T0 + 40)]
    state = mirror.motion("front_door")
    assert state is not None and not state.active and state.since == T0 + 40
    assert mirror.stats()["rejected_bad_motion"] == 1
    assert ("frigate/+/motion", 1) in mirror.subscriptions()
    unsubscribe()
    mirror.handle("frigate/front_door/motion", b"ON", False)
    assert len(seen) == 2


def test_a_description_or_a_name_arriving_is_a_detection_a_face_guess_is_not() -> None:
    mirror = make_mirror()
    seen: list[Detection] = []
    mirror.subscribe_detections(seen.append)
    oid = f"{T0:.6f}-abc123"
    mirror.handle("frigate/events", event("new", obj(oid, stationary=True)), False)
    update = {"id": oid, "camera": "front_door"}
    mirror.handle(
        "frigate/tracked_object_update",
        json.dumps({**update, "type": "face", "name": "Alice", "score": 0.5}).encode(),
        False,
    )
    mirror.handle(
        "frigate/tracked_object_update",
        json.dumps({**update, "type": "description", "description": "A courier."}).encode(),
        False,
    )
    mirror.handle(
        "frigate/tracked_object_update",
        json.dumps({**update, "type": "description", "description": "Again."}).encode(),
        False,
    )
    kinds = [(d.kind, d.described, d.sub_label) for d in seen]
    assert kinds == [("new", False, None), ("update", True, None)]

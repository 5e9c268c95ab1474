"""FramePicker: the scene, fresh; Frigate's latest.jpg next; a snapshot only as a last resort."""

from __future__ import annotations

import pytest

from service.frames.latest import FrameStore
from service.frames.pick import FramePicker
from tests.frigate_api import FakeFrigateApi
from tests.unit.frames.test_latest import FakeClock, jpeg_of

CAM = "porch"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FrameStore:
    return FrameStore(clock=clock)


async def test_a_fresh_frame_topic_frame_wins(store: FrameStore, clock: FakeClock) -> None:
    store.put(CAM, jpeg_of(), source="snapshot")
    live = store.put(CAM, jpeg_of())
    clock.now += 10
    picked, notes = await FramePicker(store, clock=clock, fresh_s=30).pick(CAM)
    assert picked is not None and picked.frame is live and picked.age_s == 10
    assert not picked.is_crop and notes == []
    assert picked.caption("Porch") == "The image from camera 'Porch', taken 10 seconds ago."


async def test_a_stale_frame_is_kept_with_its_age_over_a_snapshot(
    store: FrameStore, clock: FakeClock
) -> None:
    live = store.put(CAM, jpeg_of())
    clock.now += 600
    store.put(CAM, jpeg_of(), source="snapshot", label="person")
    picked, _ = await FramePicker(store, clock=clock).pick(CAM)
    assert picked is not None and picked.frame is live and picked.age_s == 600
    assert picked.describe()["notes"] == ["old frame: the camera has not sent a newer one"]
    assert "10 minutes ago" in picked.caption(CAM)


async def test_a_retained_snapshot_is_a_crop_of_unknown_age(
    store: FrameStore, clock: FakeClock
) -> None:
    store.put(CAM, jpeg_of(), source="snapshot", label="person", retained=True)
    picked, _ = await FramePicker(store, clock=clock).pick(CAM)
    assert picked is not None and picked.is_crop and picked.age_s is None
    described = picked.describe()
    assert described["kind"] == "crop of one object" and described["age_s"] is None
    caption = picked.caption(CAM)
    assert "cropped snapshot of the last person" in caption and "unknown age" in caption


async def test_frigate_latest_beats_a_stale_frame_and_is_cached(
    store: FrameStore, clock: FakeClock
) -> None:
    store.put(CAM, jpeg_of())
    clock.now += 120
    async with FakeFrigateApi() as api:
        api.frames[CAM] = jpeg_of(value=30)
        picker = FramePicker(store, api.url, timeout=2, cache_s=2, clock=clock)
        picked, _ = await picker.pick(CAM)
        assert picked is not None and picked.frame.source == "http" and picked.age_s == 0
        clock.now += 1
        again, _ = await picker.pick(CAM)
        assert again is not None and again.frame is picked.frame  # within the cache
        assert api.count(f"/api/{CAM}/latest.jpg") == 1
        clock.now += 2
        api.offline_cameras.add(CAM)
        offline, _ = await picker.pick(CAM)
        assert offline is not None and offline.age_s is None and offline.frame.offline
        assert "offline" in offline.caption(CAM)
        assert api.count(f"/api/{CAM}/latest.jpg") == 2


async def test_a_failed_fetch_falls_back_and_says_why(store: FrameStore, clock: FakeClock) -> None:
    store.put(CAM, jpeg_of(), source="snapshot")
    async with FakeFrigateApi(mode="error") as api:
        picked, notes = await FramePicker(store, api.url, timeout=2, clock=clock).pick(CAM)
    assert picked is not None and picked.is_crop
    assert any("latest.jpg failed" in n for n in notes)


async def test_nothing_at_all(store: FrameStore, clock: FakeClock) -> None:
    picked, notes = await FramePicker(store, clock=clock).pick(CAM)
    assert picked is None and notes == ["no frame has been received from this camera"]

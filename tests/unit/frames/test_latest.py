"""FrameStore (cheap put, latest, wait_next, counters) and FramePreparer (cache, sharing, errors)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

import cv2
import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from service.frames.latest import (
    Frame,
    FrameError,
    FramePreparer,
    FrameSource,
    FrameStore,
    frigate_reference_prepare,
)


@pytest.fixture(autouse=True)
def _default_structlog() -> None:
    """Log assertions need structlog's defaults, whatever an earlier test configured."""
    structlog.reset_defaults()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jpeg_of(width: int = 64, height: int = 48, value: int = 128) -> bytes:
    img = np.full((height, width, 3), value, np.uint8)
    img[: height // 2, : width // 2] = 255 - value
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FrameStore:
    return FrameStore(clock=clock)


# ------------------------------------------------------------------ put


def test_put_stores_the_frame_as_received(store: FrameStore, clock: FakeClock) -> None:
    jpeg = jpeg_of()
    frame = store.put("porch", jpeg)
    assert frame is not None
    assert frame == Frame("porch", jpeg, clock.now, "live", frame.seq, None)
    assert frame.jpeg is jpeg  # kept as is, no copy
    assert store.latest("porch") is frame
    assert store.cameras() == ["porch"]
    assert store.stats()["received"] == 1


def test_seq_increases_across_cameras_and_sources(store: FrameStore) -> None:
    sources: list[tuple[str, FrameSource]] = [
        ("a", "live"),
        ("b", "live"),
        ("a", "snapshot"),
        ("a", "http"),
    ]
    frames = [store.put(cam, jpeg_of(), source=src) for cam, src in sources]
    seqs = [f.seq for f in frames if f is not None]
    assert len(seqs) == 4
    assert seqs == sorted(set(seqs))


def test_put_accepts_bytearray_and_trailing_padding(store: FrameStore) -> None:
    frame = store.put("porch", bytearray(jpeg_of()))
    assert frame is not None
    assert isinstance(frame.jpeg, bytes)
    assert store.put("porch", jpeg_of() + bytes(512)) is not None


@pytest.mark.parametrize(
    ("camera", "payload", "counter"),
    [
        ("porch", b"", "rejected_not_jpeg"),
        ("porch", b"\x89PNG\r\n\x1a\n" + bytes(64), "rejected_not_jpeg"),
        ("porch", b"GIF89a" + bytes(64), "rejected_not_jpeg"),
        ("porch", b"\xff\xd8", "rejected_not_jpeg"),
        ("porch", "a string", "rejected_not_jpeg"),
        ("porch", None, "rejected_not_jpeg"),
        ("porch", b"\xff\xd8" + bytes(2_000_000), "rejected_oversize"),
        ("bad/name", b"\xff\xd8\xff\xd9", "rejected_camera"),
        ("", b"\xff\xd8\xff\xd9", "rejected_camera"),
        ("a+b", b"\xff\xd8\xff\xd9", "rejected_camera"),
        (None, b"\xff\xd8\xff\xd9", "rejected_camera"),
    ],
)
def test_bad_input_is_rejected_counted_and_never_raises(
    camera: object, payload: object, counter: str
) -> None:
    store = FrameStore(max_bytes=1_000_000)
    assert store.put(camera, payload) is None  # type: ignore[arg-type]
    stats = store.stats()
    assert stats[counter] == 1
    assert stats["received"] == 1
    assert sum(v for k, v in stats.items() if k.startswith("rejected_")) == 1
    assert store.cameras() == []


def test_oversize_bytearray_is_rejected_before_any_copy() -> None:
    store = FrameStore(max_bytes=10)
    assert store.put("porch", bytearray(b"\xff\xd8" + bytes(100) + b"\xff\xd9")) is None
    assert store.put("porch", memoryview(jpeg_of())) is None
    assert store.stats()["rejected_oversize"] == 2


def test_memoryview_is_accepted() -> None:
    frame = FrameStore().put("porch", memoryview(jpeg_of()))
    assert frame is not None
    assert isinstance(frame.jpeg, bytes)


def test_truncated_jpeg_is_rejected(store: FrameStore) -> None:
    jpeg = jpeg_of(640, 480)
    assert store.put("porch", jpeg[: len(jpeg) // 2]) is None
    assert store.stats()["rejected_truncated"] == 1


def test_size_limit_is_inclusive(clock: FakeClock) -> None:
    jpeg = jpeg_of()
    assert FrameStore(max_bytes=len(jpeg), clock=clock).put("porch", jpeg) is not None
    assert FrameStore(max_bytes=len(jpeg) - 1, clock=clock).put("porch", jpeg) is None


def test_camera_count_is_bounded(clock: FakeClock) -> None:
    store = FrameStore(max_cameras=2, clock=clock)
    assert store.put("a", jpeg_of()) is not None
    assert store.put("b", jpeg_of()) is not None
    assert store.put("c", jpeg_of()) is None
    assert store.put("a", jpeg_of()) is not None  # known cameras keep working
    assert store.stats()["rejected_camera"] == 1


def test_rejection_warnings_are_rate_limited(store: FrameStore, clock: FakeClock) -> None:
    with capture_logs() as logs:
        for _ in range(100):
            store.put("flood", b"junk")
        store.put("other", b"junk")
        clock.now += 61
        store.put("flood", b"junk")
    warnings = [e for e in logs if e["event"] == "frame_rejected"]
    assert [(w["camera"], w["suppressed"]) for w in warnings] == [
        ("flood", 0),
        ("other", 0),
        ("flood", 99),
    ]
    assert all(w["reason"] == "not_jpeg" and w["log_level"] == "warning" for w in warnings)
    assert store.stats()["rejected_not_jpeg"] == 102


def test_dropped_counts_frames_replaced_unread(store: FrameStore) -> None:
    store.put("porch", jpeg_of())
    store.put("porch", jpeg_of())  # the first was never read
    store.latest("porch")
    store.put("porch", jpeg_of())  # the second was read
    assert store.stats()["dropped"] == 1


# ------------------------------------------------------------------ latest / age


def test_latest_prefers_live_over_a_newer_snapshot(store: FrameStore, clock: FakeClock) -> None:
    live = store.put("porch", jpeg_of())
    clock.now += 5
    snap = store.put("porch", jpeg_of(), source="snapshot", label="person")
    assert snap is not None
    assert snap.label == "person"
    assert store.latest("porch") is live
    assert store.latest("porch", allow_snapshot=False) is live


def test_snapshot_is_the_fallback(store: FrameStore, clock: FakeClock) -> None:
    snap = store.put("yard", jpeg_of(), source="snapshot", label="car")
    assert store.latest("yard") is snap
    assert store.latest("yard", allow_snapshot=False) is None
    assert store.latest("nowhere") is None


def test_a_scene_frame_beats_a_newer_snapshot_however_old(clock: FakeClock) -> None:
    # A snapshot is a 270 px crop around one object: the model must see the scene.
    store = FrameStore(clock=clock)
    live = store.put("porch", jpeg_of())
    clock.now += 600
    snap = store.put("porch", jpeg_of(), source="snapshot")
    assert store.latest("porch") is live
    assert store.snapshot("porch") is snap
    assert store.scene("porch") is live


def test_a_retained_frame_has_no_known_age(store: FrameStore, clock: FakeClock) -> None:
    frame = store.put("porch", jpeg_of(), source="snapshot", retained=True)
    assert frame is not None and frame.is_crop
    assert frame.age(clock.now) == float("inf")
    assert store.age("porch") == float("inf")
    live = store.put("porch", jpeg_of())
    assert live is not None and live.age(clock.now + 2) == 2


def test_http_frames_are_live_scenes(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of(), source="http")
    store.put("porch", jpeg_of(), source="snapshot")
    assert store.latest("porch") is frame


def test_age(store: FrameStore, clock: FakeClock) -> None:
    assert store.age("porch") is None
    store.put("porch", jpeg_of())
    clock.now += 2.5
    assert store.age("porch") == 2.5
    assert store.age("porch", now=clock.now + 1) == 3.5


# ------------------------------------------------------------------ wait_next


async def test_wait_next_returns_at_once_when_a_newer_frame_exists(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of())
    assert frame is not None
    assert await store.wait_next("porch", 0, timeout=0) is frame
    assert await store.wait_next("porch", frame.seq, timeout=0) is None


async def test_wait_next_wakes_on_put(store: FrameStore) -> None:
    first = store.put("porch", jpeg_of())
    assert first is not None
    waiter = asyncio.create_task(store.wait_next("porch", first.seq, timeout=10), name="waiter")
    await asyncio.sleep(0)  # let it block on the event
    assert not waiter.done()
    store.put("other", jpeg_of())  # another camera does not wake it for good
    await asyncio.sleep(0)
    assert not waiter.done()
    second = store.put("porch", jpeg_of())
    assert await waiter is second


async def test_wait_next_times_out(store: FrameStore) -> None:
    assert await store.wait_next("porch", 0, timeout=0.01) is None
    frame = store.put("porch", jpeg_of())
    assert frame is not None
    assert await store.wait_next("porch", frame.seq, timeout=0.01) is None


async def test_wait_next_keeps_waiting_through_a_snapshot_while_live_is_fresh(
    store: FrameStore,
) -> None:
    live = store.put("porch", jpeg_of())
    assert live is not None
    waiter = asyncio.create_task(store.wait_next("porch", live.seq, timeout=10), name="waiter")
    await asyncio.sleep(0)
    store.put("porch", jpeg_of(), source="snapshot")
    await asyncio.sleep(0)
    assert not waiter.done()
    newer = store.put("porch", jpeg_of())
    assert await waiter is newer


async def test_many_waiters_all_wake(store: FrameStore) -> None:
    waiters = [
        asyncio.create_task(store.wait_next("porch", 0, timeout=10), name=f"w{i}") for i in range(5)
    ]
    await asyncio.sleep(0)
    frame = store.put("porch", jpeg_of())
    assert await asyncio.gather(*waiters) == [frame] * 5


# ------------------------------------------------------------------ preparer


async def test_prepare_matches_frigates_shape_and_caches(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of(1920, 1080))
    assert frame is not None
    url = await store.prepare_for_model(frame)
    assert url.startswith("data:image/jpeg;base64,")
    out = base64.b64decode(url.split(",", 1)[1])
    img = decode(out)
    assert img.shape == (480, 853, 3)
    ref_img = decode(base64.b64decode(frigate_reference_prepare(frame.jpeg).split(",", 1)[1]))
    assert cv2.PSNR(img, ref_img) >= 30
    again = await store.prepare_for_model(frame)
    assert again is url
    assert await store.jpeg_for_model(frame) == out
    stats = store.stats()
    assert (stats["prepared"], stats["cache_hits"], stats["prepare_errors"]) == (1, 2, 0)


async def test_concurrent_prepares_share_one_computation(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of(1280, 720))
    assert frame is not None
    urls = await asyncio.gather(*(store.prepare_for_model(frame) for _ in range(8)))
    assert len(set(urls)) == 1
    assert store.stats()["prepared"] == 1
    assert store.stats()["cache_hits"] == 7


async def test_a_cancelled_caller_does_not_cancel_the_others(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of(1280, 720))
    assert frame is not None
    first = asyncio.create_task(store.prepare_for_model(frame), name="first")
    second = asyncio.create_task(store.prepare_for_model(frame), name="second")
    await asyncio.sleep(0)
    first.cancel()
    url = await second
    assert url.startswith("data:image/jpeg;base64,")
    assert first.cancelled()
    assert store.stats()["prepared"] == 1


async def test_a_new_frame_replaces_the_cached_one(store: FrameStore) -> None:
    old = store.put("porch", jpeg_of(value=10))
    new = store.put("porch", jpeg_of(value=200))
    assert old is not None
    assert new is not None
    new_url = await store.prepare_for_model(new)
    old_url = await store.prepare_for_model(old)  # late request for an older frame
    assert old_url != new_url
    assert await store.prepare_for_model(new) is new_url  # the newer stays cached
    stats = store.stats()
    assert (stats["prepared"], stats["cache_hits"]) == (2, 1)


async def test_cameras_are_cached_independently(store: FrameStore) -> None:
    a = store.put("a", jpeg_of(value=10))
    b = store.put("b", jpeg_of(value=200))
    assert a is not None
    assert b is not None
    url_a = await store.prepare_for_model(a)
    await store.prepare_for_model(b)
    assert await store.prepare_for_model(a) is url_a


async def test_corrupt_frame_raises_frame_error_once_computed(store: FrameStore) -> None:
    corrupt = b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"
    frame = store.put("porch", corrupt)
    assert frame is not None  # the cheap checks cannot see it
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(FrameError) as err:
                await store.prepare_for_model(frame)
            assert err.value.reason == "decode_failed"
    stats = store.stats()
    assert (stats["prepared"], stats["prepare_errors"]) == (0, 1)
    failures = [e for e in logs if e["event"] == "frame_prepare_failed"]
    assert len(failures) == 1
    assert failures[0]["camera"] == "porch"
    assert failures[0]["reason"] == "decode_failed"
    good = store.put("porch", jpeg_of())
    assert good is not None
    assert (await store.prepare_for_model(good)).startswith("data:image/jpeg;base64,")


async def test_preparer_settings_apply() -> None:
    store = FrameStore(preparer=FramePreparer(max_height=120, quality=50))
    frame = store.put("porch", jpeg_of(640, 480))
    assert frame is not None
    out = await store.jpeg_for_model(frame)
    assert decode(out).shape == (120, 160, 3)


async def test_cache_hit_is_cheap(store: FrameStore) -> None:
    frame = store.put("porch", jpeg_of())
    assert frame is not None
    first = await store.prepare_for_model(frame)
    # A hit must not reach the executor: it completes without yielding to the loop.
    coro = store.prepare_for_model(frame)
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value is first


def test_importing_the_frame_layer_stays_light() -> None:
    code = (
        "import sys, service.frames.latest, service.frames.grab; "
        "heavy = {'cv2', 'numpy', 'openai', 'aiomqtt', 'httpx2'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

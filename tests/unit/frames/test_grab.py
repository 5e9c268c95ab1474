"""`lookout grab`: files, live sources (faked and over local HTTP), pacing, reconnects, stop."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from service.frames.capture import redact_source, source_target
from service.frames.grab import GrabStats, run_grab


@pytest.fixture(autouse=True)
def _default_structlog() -> None:
    """Log assertions need structlog's defaults, whatever an earlier test configured."""
    structlog.reset_defaults()


# ------------------------------------------------------------------ helpers


def level(index: int) -> int:
    """The grey level of frame ``index``; far enough apart to survive MJPG and JPEG."""
    return (index * 20) % 240


def index_of(jpeg: bytes) -> int:
    img = decode(jpeg)
    return round(float(img.mean()) / 20)


def decode(jpeg: bytes) -> np.ndarray:
    assert jpeg[:2] == b"\xff\xd8"
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def write_video(path: Path, frames: int, fps: float, size: tuple[int, int] = (160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), level(i), np.uint8))
    writer.release()
    return path


class Sink:
    """A `publish` that keeps what it is given and can fail on chosen calls."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.frames: list[bytes] = []
        self.calls = 0
        self.fail_on = fail_on or set()
        self.after: dict[int, asyncio.Event] = {}

    async def __call__(self, jpeg: bytes) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError("broker gone")
        self.frames.append(jpeg)
        if (event := self.after.get(len(self.frames))) is not None:
            event.set()


class FakeCapture:
    """Stands in for cv2.VideoCapture: `frames` frames (None: endless), then the end."""

    def __init__(
        self,
        frames: int | None = None,
        *,
        opened: bool = True,
        size: tuple[int, int] = (64, 48),
        fps: float = 25.0,
        fail_retrieve: bool = False,
    ) -> None:
        self.frames, self.opened, self.size, self.fps = frames, opened, size, fps
        self.fail_retrieve = fail_retrieve
        self.served = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 -- cv2's name
        return self.opened

    def grab(self) -> bool:
        if self.frames is not None and self.served >= self.frames:
            return False
        time.sleep(0.0005)  # the fake camera's frame period; also lets other threads run
        self.served += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        if self.fail_retrieve:
            raise cv2.error("decoder exploded")
        return True, np.full((self.size[1], self.size[0], 3), level(self.served - 1), np.uint8)

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FRAME_WIDTH: self.size[0], cv2.CAP_PROP_FRAME_HEIGHT: self.size[1]}
        return float(values.get(prop, self.fps if prop == cv2.CAP_PROP_FPS else 0))

    def release(self) -> None:
        self.released.set()


class ScriptedOpener:
    """Hands out the scripted captures in turn; the last one repeats."""

    def __init__(self, *script: FakeCapture | Exception) -> None:
        self.script = list(script)
        self.targets: list[str | int] = []

    def __call__(self, target: str | int) -> Any:
        self.targets.append(target)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


class Backoff(TypedDict):
    backoff_initial: float
    backoff_max: float


FAST = Backoff(backoff_initial=0.001, backoff_max=0.002)


# ------------------------------------------------------------------ files


async def test_file_frames_are_published_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=12, fps=10)
    sink = Sink()
    stats = await run_grab(str(video), "garage", sink, fps=500, max_frames=5)
    assert stats == GrabStats(published=5, opens=1, reason="max_frames")
    assert [decode(f).shape for f in sink.frames] == [(120, 160, 3)] * 5
    assert [index_of(f) for f in sink.frames] == [0, 1, 2, 3, 4]


async def test_a_file_keeps_its_own_clock(tmp_path: Path) -> None:
    # 100 fps source sampled at 50 fps: every second frame.
    video = write_video(tmp_path / "clip.avi", frames=40, fps=100)
    sink = Sink()
    await run_grab(str(video), "garage", sink, fps=50, max_frames=4)
    assert [index_of(f) for f in sink.frames] == [0, 2, 4, 6]


async def test_a_file_ends_at_its_end(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=6, fps=10)
    sink = Sink()
    stats = await run_grab(f"file://{video}", "garage", sink, fps=1000)
    assert (stats.published, stats.reason) == (6, "end_of_file")
    assert [index_of(f) for f in sink.frames] == [0, 1, 2, 3, 4, 5]


async def test_a_looped_file_restarts(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=3, fps=10)
    sink = Sink()
    stats = await run_grab(str(video), "garage", sink, fps=1000, loop_file=True, max_frames=7)
    assert [index_of(f) for f in sink.frames] == [0, 1, 2, 0, 1, 2, 0]
    assert (stats.opens, stats.reason) == (3, "max_frames")


async def test_max_height_and_quality(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    video = tmp_path / "busy.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(2):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    small, low, high = Sink(), Sink(), Sink()
    await run_grab(str(video), "garage", small, fps=1000, max_height=120, max_frames=1)
    await run_grab(str(video), "garage", low, fps=1000, quality=30, max_frames=1)
    await run_grab(str(video), "garage", high, fps=1000, quality=95, max_frames=1)
    assert decode(small.frames[0]).shape == (120, 160, 3)
    assert decode(low.frames[0]).shape == (240, 320, 3)
    assert len(low.frames[0]) < len(high.frames[0]) / 2


@pytest.mark.parametrize("content", [None, b"this is not a video"])
async def test_a_file_that_cannot_be_read_ends_the_grab(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "clip.avi"
    if content is not None:
        path.write_bytes(content)
    stats = await run_grab(str(path), "garage", Sink(), fps=1000, **FAST)
    assert (stats.published, stats.reason) == (0, "open_failed")


# ------------------------------------------------------------------ live sources


async def test_live_source_that_never_opens_gives_up() -> None:
    opener = ScriptedOpener(FakeCapture(opened=False), OSError("no route to host"))
    stats = await run_grab(
        "rtsp://cam/live", "porch", Sink(), fps=1000, max_attempts=3, opener=opener, **FAST
    )
    assert stats == GrabStats(open_failures=3, reason="gave_up")
    assert opener.targets == ["rtsp://cam/live"] * 3


async def test_live_source_reconnects_after_failures_and_drops() -> None:
    first_session = FakeCapture(frames=2)
    opener = ScriptedOpener(
        FakeCapture(opened=False), first_session, FakeCapture(fail_retrieve=True), FakeCapture()
    )
    sink = Sink()
    with capture_logs() as logs:
        stats = await run_grab(
            "rtsp://cam/live", "porch", sink, fps=1000, max_frames=5, opener=opener, **FAST
        )
    assert (stats.published, stats.reason) == (5, "max_frames")
    assert (stats.open_failures, stats.opens, stats.lost) == (1, 3, 2)
    assert all(decode(f).shape == (48, 64, 3) for f in sink.frames)
    events = [e["event"] for e in logs]
    for expected in ("grab_source_open_failed", "grab_source_opened", "grab_source_lost"):
        assert expected in events
    assert "grab_read_failed" in events
    assert await asyncio.to_thread(first_session.released.wait, 5)


async def test_stop_interrupts_the_backoff() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def opener(_target: str | int) -> FakeCapture:
        loop.call_soon_threadsafe(stop.set)
        return FakeCapture(opened=False)

    async with asyncio.timeout(10):
        stats = await run_grab(
            "rtsp://cam/live",
            "porch",
            Sink(),
            stop=stop,
            backoff_initial=60,
            backoff_max=60,
            opener=opener,
        )
    assert stats.reason == "stopped"
    assert stats.open_failures <= 1


async def test_stop_while_streaming() -> None:
    stop = asyncio.Event()
    sink = Sink()
    sink.after[3] = stop
    stats = await run_grab(
        "rtsp://cam/live", "porch", sink, fps=100, stop=stop, opener=ScriptedOpener(FakeCapture())
    )
    assert stats.reason == "stopped"
    assert 3 <= stats.published <= 4


async def test_a_stop_set_before_the_start_publishes_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    stats = await run_grab(
        "rtsp://cam/live", "porch", Sink(), stop=stop, opener=ScriptedOpener(FakeCapture())
    )
    assert (stats.published, stats.reason) == (0, "stopped")


async def test_cancelling_the_grab_releases_the_capture() -> None:
    capture = FakeCapture()
    sink = Sink()
    started = asyncio.Event()
    sink.after[1] = started
    task = asyncio.create_task(
        run_grab("rtsp://cam/live", "porch", sink, fps=100, opener=ScriptedOpener(capture)),
        name="grab",
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(capture.released.wait, 5)


async def test_publish_failures_are_counted_and_the_grab_goes_on() -> None:
    sink = Sink(fail_on={1, 2})
    with capture_logs() as logs:
        stats = await run_grab(
            "rtsp://cam/live",
            "porch",
            sink,
            fps=1000,
            max_frames=3,
            opener=ScriptedOpener(FakeCapture()),
        )
    assert (stats.published, stats.publish_errors) == (3, 2)
    events = [e["event"] for e in logs]
    assert events.count("grab_publish_failed") == 1
    assert events.count("grab_publish_recovered") == 1


async def test_credentials_never_reach_the_log() -> None:
    source = "rtsp://admin:hunter2@10.0.0.5:554/live?token=s3cret"
    opener = ScriptedOpener(FakeCapture(frames=1), FakeCapture(opened=False))
    with capture_logs() as logs:
        await run_grab(source, "porch", Sink(), fps=1000, max_attempts=2, opener=opener, **FAST)
    assert logs
    text = repr(logs)
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert "10.0.0.5" in text
    assert opener.targets[0] == source  # the opener still gets the real URL


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fps": 0},
        {"fps": -1},
        {"quality": 0},
        {"quality": 101},
        {"max_height": 0},
        {"backoff_initial": 5, "backoff_max": 1},
    ],
)
async def test_bad_arguments_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await run_grab("rtsp://cam/live", "porch", Sink(), **kwargs)


async def test_bad_camera_name_raises() -> None:
    with pytest.raises(ValueError):
        await run_grab("rtsp://cam/live", "front/door", Sink())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("rtsp://u:p@cam:554/s?x=1", "rtsp://***@cam:554/s?***"),
        ("http://cam/mjpeg", "http://cam/mjpeg"),
        ("rtsp://[fe80::1]:554/s", "rtsp://[fe80::1]:554/s"),
        ("/videos/clip.avi", "/videos/clip.avi"),
        ("0", "0"),
    ],
)
def test_redact_source(source: str, expected: str) -> None:
    assert redact_source(source) == expected


@pytest.mark.parametrize(
    ("source", "target", "live"),
    [
        ("rtsp://cam/s", "rtsp://cam/s", True),
        ("https://cam/video.mjpg", "https://cam/video.mjpg", True),
        ("0", 0, True),
        ("/tmp/clip.avi", "/tmp/clip.avi", False),
        ("file:///tmp/clip.avi", "/tmp/clip.avi", False),
        ("clip.avi", "clip.avi", False),
    ],
)
def test_source_kinds(source: str, target: str | int, live: bool) -> None:
    assert source_target(source) == (target, live)


# ------------------------------------------------------------------ real OpenCV over local HTTP


@pytest.fixture
def mjpeg_server() -> Iterator[tuple[str, list[int]]]:
    """A local MJPEG camera that sends 30 frames per connection, then hangs up."""
    frames = [
        cv2.imencode(".jpg", np.full((120, 160, 3), level(i), np.uint8))[1].tobytes()
        for i in range(30)
    ]
    connections: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_GET(self) -> None:
            connections.append(1)
            if self.path != "/video.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in frames:
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                self.wfile.write(head % len(jpeg) + jpeg + b"\r\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=functools.partial(server.serve_forever, 0.05), name="mjpeg-server", daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", connections
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_real_mjpeg_stream_over_http_with_reconnects(
    mjpeg_server: tuple[str, list[int]],
) -> None:
    url, connections = mjpeg_server
    sink = Sink()
    stats = await run_grab(url, "porch", sink, fps=1000, max_frames=4, max_attempts=50, **FAST)
    assert (stats.published, stats.reason) == (4, "max_frames")
    assert all(decode(f).shape == (120, 160, 3) for f in sink.frames)
    assert len(connections) == stats.opens >= 1


async def test_real_http_source_that_is_not_there(mjpeg_server: tuple[str, list[int]]) -> None:
    url, connections = mjpeg_server
    missing = url.replace("/video.mjpg", "/missing")
    stats = await run_grab(missing, "porch", Sink(), max_attempts=2, **FAST)
    assert (stats.open_failures, stats.opens, stats.reason) == (2, 0, "gave_up")
    assert len(connections) == 2

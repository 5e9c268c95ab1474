"""Camera frames: the latest JPEG per camera, and the way a frame becomes a model input.

:class:`FrameStore` keeps one live frame and one Frigate snapshot per camera. ``put`` is
O(1) and never decodes: it runs on the MQTT dispatch loop for every frame of every camera,
so it only checks size, the JPEG start and end markers and the camera name.

:class:`FramePreparer` turns a frame into what a vision model receives (see
:mod:`service.frames.jpeg`) in a worker thread -- cv2 releases the GIL, so two frames prepare on
two cores -- and caches the result per camera and frame: a frame is never prepared twice.

The pure JPEG functions are re-exported here, so callers need only this module.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import structlog

from service.frames.jpeg import (
    EOI,
    MAX_HEIGHT,
    QUALITY,
    SOI,
    FrameError,
    choose_reduction,
    fetch_latest,
    fit_height,
    frigate_reference_prepare,
    jpeg_dimensions,
    load_cv2,
    prepare_jpeg_sync,
    to_data_url,
)
from service.settings import NAME_RE

__all__ = [
    "Frame",
    "FrameError",
    "FramePreparer",
    "FrameSource",
    "FrameStore",
    "PreparedFrame",
    "choose_reduction",
    "fetch_latest",
    "fit_height",
    "frigate_reference_prepare",
    "jpeg_dimensions",
    "load_cv2",
    "prepare_jpeg_sync",
    "to_data_url",
]

log = structlog.get_logger(__name__)

FrameSource = Literal["live", "snapshot", "http"]
_EOI_WINDOW: Final = 4096
"""Bytes at the end searched for EOI: tolerates padding after it, still O(1)."""
_COUNTERS: Final = (
    "received",
    "rejected_oversize",
    "rejected_not_jpeg",
    "rejected_truncated",
    "rejected_camera",
    "dropped",
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One JPEG from a camera, as received.

    Attributes:
        camera: The camera name (one safe topic level).
        jpeg: The encoded image, untouched.
        received_at: Wall-clock unix seconds when the store accepted it.
        source: ``live`` (a scene frame over MQTT), ``http`` (a scene frame from Frigate's
            API) or ``snapshot`` (Frigate's retained, cropped 270 px object image).
        seq: Increases with every accepted frame of a store; unique per store.
        label: The object label of a snapshot, else ``None``.
        retained: It came as a retained MQTT message (delivered because lookout
            subscribed): when it was taken is unknown, possibly days ago.
        offline: Frigate marked it as a preview of a camera that is offline.
    """

    camera: str
    jpeg: bytes
    received_at: float
    source: FrameSource
    seq: int
    label: str | None = None
    retained: bool = False
    offline: bool = False

    def age(self, now: float) -> float:
        """Seconds since it was taken, as far as lookout can tell: infinite when unknown.

        A retained message may be days old whenever it arrives, and Frigate's preview of
        an offline camera is old by definition, so neither is ever fresh.
        """
        if self.retained or self.offline:
            return float("inf")
        return max(0.0, now - self.received_at)

    @property
    def is_crop(self) -> bool:
        """A Frigate snapshot: a crop around one object, not the whole scene."""
        return self.source == "snapshot"


@dataclass(frozen=True, slots=True)
class PreparedFrame:
    """A frame as a model sees it: the re-encoded JPEG and its data URL."""

    jpeg: bytes
    data_url: str


def _prepare_worker(jpeg: bytes, max_height: int, quality: int, area: bool) -> PreparedFrame:
    out = prepare_jpeg_sync(jpeg, max_height, quality, area=area)
    return PreparedFrame(jpeg=out, data_url=to_data_url(out))


class FramePreparer:
    """Prepares frames for a model, once per frame, keeping the latest result per camera.

    Concurrent calls for the same frame share one computation; a caller that is
    cancelled does not cancel it for the others. A frame that fails to decode keeps
    failing from the cache instead of being decoded again. Meant for one
    :class:`FrameStore` (``seq`` is the cache key) and one event loop. ``area`` forces
    ``INTER_AREA`` for every resize (see :func:`service.frames.jpeg.fit_height`).
    """

    def __init__(
        self, max_height: int = MAX_HEIGHT, quality: int = QUALITY, *, area: bool = False
    ) -> None:
        self.max_height = max_height
        self.quality = quality
        self.area = area
        self._cache: dict[str, tuple[int, asyncio.Future[PreparedFrame]]] = {}
        self._counts = {"prepared": 0, "cache_hits": 0, "prepare_errors": 0}

    async def prepare(self, frame: Frame) -> PreparedFrame:
        """Resize and re-encode ``frame`` in a worker thread, or return the cached result.

        Raises:
            FrameError: The frame does not decode.
        """
        entry = self._cache.get(frame.camera)
        if entry is not None and entry[0] == frame.seq:
            fut = entry[1]
            self._counts["cache_hits"] += 1
            if fut.done():
                return fut.result()
            return await asyncio.shield(fut)
        fut = self._start(frame)
        if entry is None or entry[0] < frame.seq:
            # An older frame asked for late is computed but does not evict the newer one.
            self._cache[frame.camera] = (frame.seq, fut)
        return await asyncio.shield(fut)

    async def prepare_for_model(self, frame: Frame) -> str:
        """The frame as a ``data:image/jpeg;base64,...`` URL (raises FrameError)."""
        return (await self.prepare(frame)).data_url

    async def jpeg_for_model(self, frame: Frame) -> bytes:
        """The JPEG behind :meth:`prepare_for_model`, e.g. to publish (raises FrameError)."""
        return (await self.prepare(frame)).jpeg

    def stats(self) -> dict[str, int]:
        """Counters: ``prepared``, ``cache_hits``, ``prepare_errors``."""
        return dict(self._counts)

    def _start(self, frame: Frame) -> asyncio.Future[PreparedFrame]:
        loop = asyncio.get_running_loop()
        # What asyncio.to_thread does, but keeping the future: callers share it.
        ctx = contextvars.copy_context()
        fut: asyncio.Future[PreparedFrame] = loop.run_in_executor(
            None, ctx.run, _prepare_worker, frame.jpeg, self.max_height, self.quality, self.area
        )
        fut.add_done_callback(lambda f: self._settled(frame, f))
        return fut

    def _settled(self, frame: Frame, fut: asyncio.Future[PreparedFrame]) -> None:
        # Runs once per computation, however many callers wait; retrieving the exception
        # here also keeps asyncio from reporting it as never retrieved.
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            self._counts["prepared"] += 1
            return
        self._counts["prepare_errors"] += 1
        log.warning(
            "frame_prepare_failed",
            camera=frame.camera,
            seq=frame.seq,
            source=frame.source,
            size=len(frame.jpeg),
            reason=getattr(exc, "reason", type(exc).__name__),
            error=str(exc),
        )


class _RateLimiter:
    """Lets one log line per key through per interval and counts the ones held back."""

    def __init__(self, interval: float, clock: Callable[[], float], max_keys: int = 1024) -> None:
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, key: tuple[str, str]) -> int | None:
        """Return how many were suppressed since the last allowed line, or ``None`` to suppress."""
        now = self._clock()
        last, suppressed = self._state.get(key, (None, 0))
        # A clock that stepped back must not silence a key until it catches up.
        if last is None or now - last >= self._interval or now < last:
            if len(self._state) >= self._max_keys:
                self._state.clear()
            self._state[key] = (now, 0)
            return suppressed
        self._state[key] = (last, suppressed + 1)
        return None


class FrameStore:
    """The latest frame of every camera; a live frame and a snapshot are kept apart.

    ``latest`` prefers the scene: a frame from lookout's frame topic or Frigate's
    ``latest.jpg``, however old, over a snapshot, which is a small crop around one object.
    The snapshot is returned only when there is no scene frame at all (see
    :class:`~service.frames.pick.FramePicker` for the whole order a model's frame is
    chosen in, fetching included).

    Not thread-safe: call every method from the event loop that owns the store.

    Args:
        max_bytes: Larger frames are rejected.
        clock: Wall-clock unix seconds, injectable for tests.
        max_cameras: New camera names beyond this are rejected (bounds memory).
        warn_interval: At most one rejection warning per camera and reason per interval.
        preparer: The pipeline used by :meth:`prepare_for_model`.
    """

    def __init__(
        self,
        max_bytes: int = 8 * 1024 * 1024,
        *,
        clock: Callable[[], float] = time.time,
        max_cameras: int = 256,
        warn_interval: float = 60.0,
        preparer: FramePreparer | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.preparer = preparer or FramePreparer()
        self._clock = clock
        self._max_cameras = max_cameras
        self._seq = 0
        self._live: dict[str, Frame] = {}
        self._snapshots: dict[str, Frame] = {}
        self._unread: set[int] = set()
        self._waiters: dict[str, asyncio.Event] = {}
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._warn = _RateLimiter(warn_interval, clock)

    def put(
        self,
        camera: str,
        jpeg: bytes | bytearray | memoryview,
        *,
        source: FrameSource = "live",
        label: str | None = None,
        retained: bool = False,
        offline: bool = False,
    ) -> Frame | None:
        """Store a frame as the camera's latest; O(1), never decodes, never raises.

        Returns:
            The stored frame, or ``None`` when it was rejected (logged, rate-limited,
            and counted in :meth:`stats`).
        """
        self._counts["received"] += 1
        bytes_like = isinstance(jpeg, bytes | bytearray | memoryview)
        size = memoryview(jpeg).nbytes if bytes_like else -1
        if bytes_like and not isinstance(jpeg, bytes) and size <= self.max_bytes:
            jpeg = bytes(jpeg)  # aiomqtt may hand over a bytearray; frames stay immutable
        reason = self._check(camera, jpeg, size)
        if reason is not None:
            self._reject(camera, reason, size)
            return None
        self._seq += 1
        frame = Frame(
            camera, cast("bytes", jpeg), self._clock(), source, self._seq, label, retained, offline
        )
        slots = self._snapshots if source == "snapshot" else self._live
        old = slots.get(camera)
        slots[camera] = frame
        self._unread.add(frame.seq)
        if old is not None and old.seq in self._unread:
            self._unread.discard(old.seq)
            self._counts["dropped"] += 1
        if (event := self._waiters.pop(camera, None)) is not None:
            event.set()
        return frame

    def latest(self, camera: str, *, allow_snapshot: bool = True) -> Frame | None:
        """The camera's current frame under the policy in the class docstring, or ``None``."""
        frame = self._pick(camera, allow_snapshot)
        if frame is not None:
            self._unread.discard(frame.seq)
        return frame

    async def wait_next(
        self, camera: str, after_seq: int, timeout: float, *, allow_snapshot: bool = True
    ) -> Frame | None:
        """Wait until :meth:`latest` would return a frame with ``seq > after_seq``.

        Returns at once if there already is one. Pass ``after_seq=0`` for any frame.

        Returns:
            The frame, or ``None`` when ``timeout`` seconds pass first.
        """
        if (frame := self._newer(camera, after_seq, allow_snapshot)) is not None:
            return frame
        if timeout <= 0 or not NAME_RE.fullmatch(camera):
            return None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._waiters.get(camera) or self._waiters.setdefault(
                        camera, asyncio.Event()
                    )
                    await event.wait()
                    if (frame := self._newer(camera, after_seq, allow_snapshot)) is not None:
                        return frame
        except TimeoutError:
            return None

    def cameras(self) -> list[str]:
        """Cameras with a live frame or a snapshot, sorted."""
        return sorted(self._live.keys() | self._snapshots.keys())

    def age(self, camera: str, now: float | None = None) -> float | None:
        """:meth:`Frame.age` of :meth:`latest`'s frame (infinite: unknown), ``None`` without one."""
        frame = self._pick(camera, allow_snapshot=True)
        if frame is None:
            return None
        return frame.age(self._clock() if now is None else now)

    def snapshot(self, camera: str) -> Frame | None:
        """The camera's latest Frigate snapshot (a crop), if any."""
        return self._snapshots.get(camera)

    def scene(self, camera: str) -> Frame | None:
        """The camera's latest whole-scene frame (frame topic or Frigate's API), if any."""
        return self._live.get(camera)

    def stats(self) -> dict[str, int]:
        """Counters of the store and its preparer.

        ``received`` counts every ``put`` call, rejected or not; ``dropped`` counts
        frames replaced before anyone read them.
        """
        return self._counts | self.preparer.stats()

    async def prepare_for_model(self, frame: Frame) -> str:
        """:meth:`FramePreparer.prepare_for_model` of this store's preparer (raises FrameError)."""
        return await self.preparer.prepare_for_model(frame)

    async def jpeg_for_model(self, frame: Frame) -> bytes:
        """:meth:`FramePreparer.jpeg_for_model` of this store's preparer (raises FrameError)."""
        return await self.preparer.jpeg_for_model(frame)

    def _check(self, camera: str, jpeg: object, size: int) -> str | None:
        if not self._camera_ok(camera):
            return "camera"
        if size > self.max_bytes:
            return "oversize"
        if not isinstance(jpeg, bytes) or size < 4 or not jpeg.startswith(SOI):
            return "not_jpeg"
        # EOI may be followed by padding; a frame cut short has none near its end.
        if jpeg.rfind(EOI, max(2, size - _EOI_WINDOW)) < 0:
            return "truncated"
        return None

    def _camera_ok(self, camera: str) -> bool:
        if not isinstance(camera, str) or not NAME_RE.fullmatch(camera):
            return False
        known = camera in self._live or camera in self._snapshots
        return known or len(self._live.keys() | self._snapshots.keys()) < self._max_cameras

    def _reject(self, camera: Any, reason: str, size: int) -> None:
        self._counts[f"rejected_{reason}"] += 1
        shown = camera if isinstance(camera, str) and NAME_RE.fullmatch(camera) else "<invalid>"
        suppressed = self._warn.allow((shown, reason))
        if suppressed is not None:
            log.warning(
                "frame_rejected",
                camera=shown,
                reason=reason,
                size=size,
                max_bytes=self.max_bytes,
                suppressed=suppressed,
            )

    def _pick(self, camera: str, allow_snapshot: bool) -> Frame | None:
        live = self._live.get(camera)
        if live is not None or not allow_snapshot:
            return live
        return self._snapshots.get(camera)

    def _newer(self, camera: str, after_seq: int, allow_snapshot: bool) -> Frame | None:
        frame = self._pick(camera, allow_snapshot)
        if frame is None or frame.seq <= after_seq:
            return None
        self._unread.discard(frame.seq)
        return frame

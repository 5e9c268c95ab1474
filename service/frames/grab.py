"""``lookout grab``: feed a camera that Frigate does not front into lookout's frame topic.

Reading happens in :mod:`service.frames.capture`; this module paces, encodes, publishes and
reconnects. Slots sit on a fixed monotonic grid (start + k/fps), so the rate does not
drift; slots missed because the source or the publish was slow are skipped, not burst
through. A file advances ``source_fps / fps`` frames per slot, so at an ``fps`` below its
own it plays in real time; a slow consumer makes it play slower, never skip more.
A live source that fails to open or drops is reopened with capped exponential backoff; a
file that cannot be opened ends the grab.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from service.frames.capture import (
    CaptureReader,
    Opener,
    encode_frame,
    open_capture,
    redact_source,
    source_target,
)
from service.frames.jpeg import QUALITY
from service.settings import NAME_RE

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class GrabStats:
    """What a grab did; ``reason`` says why it ended.

    ``reason`` is ``max_frames``, ``stopped``, ``end_of_file``, ``open_failed`` (a file
    that cannot be opened or has no frames) or ``gave_up`` (``max_attempts`` reached).
    """

    published: int = 0
    opens: int = 0
    open_failures: int = 0
    lost: int = 0
    publish_errors: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Options:
    fps: float
    quality: int
    max_height: int | None
    loop_file: bool
    max_frames: int | None
    backoff_initial: float
    backoff_max: float
    max_attempts: int | None
    opener: Opener


class _Stopped(Exception):  # noqa: N818 -- a signal, not an error
    """The grab's stop event fired while waiting."""


class _Grab:
    """The loop behind :func:`run_grab`; one instance per call."""

    def __init__(
        self,
        source: str,
        camera: str,
        publish: Callable[[bytes], Awaitable[None]],
        stop: asyncio.Event,
        opts: _Options,
    ) -> None:
        self.camera, self.publish, self.stop, self.opts = camera, publish, stop, opts
        self.stats = GrabStats()
        self.target, self.live = source_target(source)
        self.log = log.bind(camera=camera, source=redact_source(source))
        self._failing = False

    async def run(self) -> GrabStats:
        # One named watcher for the stop event lets every wait below race against it.
        self._stopped = asyncio.create_task(self.stop.wait(), name=f"grab[{self.camera}]:stop")
        try:
            self.stats.reason = await self._sessions()
        except _Stopped:
            self.stats.reason = "stopped"
        finally:
            self._stopped.cancel()
        return self.stats

    async def _sessions(self) -> str:
        attempts = published = 0
        while True:
            reader = CaptureReader(self.opts.opener, self.target, self.live, f"grab-{self.camera}")
            try:
                outcome = await self._session(reader)
            finally:
                reader.close()
            if outcome == "end_of_file" and self.opts.loop_file:
                self.log.info("grab_file_restarted", published=self.stats.published)
                continue
            if outcome in ("max_frames", "end_of_file") or not self.live:
                return outcome  # a file that cannot be opened or has no frames: open_failed
            # Count sessions in a row that produced nothing; one that did resets the backoff.
            attempts = 0 if self.stats.published > published else attempts + 1
            published = self.stats.published
            limit = self.opts.max_attempts
            if limit is not None and attempts >= limit:
                return "gave_up"
            delay = min(
                self.opts.backoff_max, self.opts.backoff_initial * 2 ** max(0, attempts - 1)
            )
            # A source that serves one picture per connection is polled at most at fps.
            delay = max(delay, 1 / self.opts.fps) if attempts == 0 else delay
            delay *= random.uniform(0.8, 1.0)  # grabs must not hammer a rebooted NVR in step
            self.log.info("grab_retry_scheduled", attempt=attempts, retry_in=round(delay, 3))
            await self._sleep(delay)

    async def _session(self, reader: CaptureReader) -> str:
        try:
            width, height, src_fps = await self._until(reader.start())
        except _Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 -- whatever the backend raised, we retry
            self.stats.open_failures += 1
            self.log.warning("grab_source_open_failed", error=str(exc) or type(exc).__name__)
            return "open_failed"
        self.stats.opens += 1
        self.log.info(
            "grab_source_opened", width=width, height=height, source_fps=src_fps, live=self.live
        )
        outcome = await self._pump(reader, src_fps)
        if outcome == "lost":
            self.stats.lost += 1
            self.log.warning("grab_source_lost", published=self.stats.published)
        return outcome

    async def _pump(self, reader: CaptureReader, src_fps: float) -> str:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.opts.fps
        # A file advances source_fps / fps frames per slot: its clock matches the source's.
        step = max(1, round(src_fps / self.opts.fps)) if src_fps > 0 and not self.live else 1
        next_slot, got = loop.time(), 0
        while True:
            limit = self.opts.max_frames
            if limit is not None and self.stats.published >= limit:
                return "max_frames"
            await self._sleep(next_slot - loop.time())
            img = await self._read(reader, 0 if got == 0 else step - 1)
            if img is None:
                return "lost" if self.live else ("end_of_file" if got else "open_failed")
            got += 1
            await self._publish(img)
            # Slots stay on the start + k/fps grid; missed ones are skipped, not burst through
            # (a file then plays slower rather than dropping frames).
            next_slot += period * (1 + max(0, math.floor((loop.time() - next_slot) / period)))

    async def _read(self, reader: CaptureReader, skip: int) -> Any:
        try:
            return await self._until(reader.next_frame(skip))
        except _Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 -- a backend error ends this session only
            self.log.warning("grab_read_failed", error=str(exc) or type(exc).__name__)
            return None

    async def _publish(self, img: Any) -> None:
        opts = self.opts
        try:
            jpeg = await asyncio.to_thread(encode_frame, img, opts.quality, opts.max_height)
            await self.publish(jpeg)
        except Exception as exc:  # noqa: BLE001 -- per-frame boundary: the next may get through
            self.stats.publish_errors += 1
            if not self._failing:
                self.log.warning("grab_publish_failed", error=str(exc) or type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            self.log.info("grab_publish_recovered", failed=self.stats.publish_errors)
            self._failing = False
        self.stats.published += 1

    async def _until(self, fut: concurrent.futures.Future[T]) -> T:
        """The future's result; raises its exception, or ``_Stopped`` if stopped first."""
        wrapped = asyncio.wrap_future(fut)
        racing: set[asyncio.Future[Any]] = {wrapped, self._stopped}
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if wrapped not in done:
            wrapped.cancel()
            raise _Stopped
        return wrapped.result()

    async def _sleep(self, delay: float) -> None:
        """Pace or back off; raises ``_Stopped`` if the stop event fires meanwhile."""
        if delay > 0 and (await asyncio.wait({self._stopped}, timeout=delay))[0]:
            raise _Stopped
        if self._stopped.done():
            raise _Stopped


async def run_grab(
    source: str,
    camera: str,
    publish: Callable[[bytes], Awaitable[None]],
    *,
    fps: float = 1.0,
    quality: int = QUALITY,
    max_height: int | None = None,
    loop_file: bool = False,
    max_frames: int | None = None,
    stop: asyncio.Event | None = None,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    max_attempts: int | None = None,
    opener: Opener = open_capture,
) -> GrabStats:
    """Read ``source`` and publish one JPEG every ``1/fps`` seconds until told to stop.

    Args:
        source: ``rtsp://…``, ``http(s)://…`` (MJPEG), a device index such as ``0``, or
            a video file path (``file://`` allowed).
        camera: The camera name the frames are published for (one safe topic level).
        publish: Sends one JPEG, e.g. to ``lookout/camera/<camera>/frame``. An exception
            is logged and counted; the grab goes on.
        fps: Frames published per second.
        quality: JPEG quality, 1-100.
        max_height: Shrink taller frames to this many rows (never enlarged).
        loop_file: Restart a file at its end instead of finishing.
        max_frames: Finish after publishing this many frames.
        stop: Finish when this event is set (cancelling the task works as well).
        backoff_initial: First delay before reopening a live source, doubling per failure.
        backoff_max: The cap of that delay.
        max_attempts: Give up after this many sessions in a row without a frame
            (failed opens or immediate drops of a live source).
        opener: Makes the capture object (tests pass a fake).

    Raises:
        ValueError: An argument is out of range.
    """
    if not NAME_RE.fullmatch(camera):
        raise ValueError(f"{camera!r} is not a valid camera name")
    if not (fps > 0 and 1 <= quality <= 100 and (max_height is None or max_height >= 1)):
        raise ValueError("need fps > 0, 1 <= quality <= 100 and max_height >= 1")
    if backoff_initial < 0 or backoff_max < backoff_initial:
        raise ValueError("need 0 <= backoff_initial <= backoff_max")
    opts = _Options(
        fps=fps,
        quality=quality,
        max_height=max_height,
        loop_file=loop_file,
        max_frames=max_frames,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        max_attempts=max_attempts,
        opener=opener,
    )
    grab = _Grab(source, camera, publish, stop or asyncio.Event(), opts)
    grab.log.info("grab_started", fps=fps, quality=quality, max_height=max_height, live=grab.live)
    stats = await grab.run()
    grab.log.info("grab_finished", **{k: getattr(stats, k) for k in GrabStats.__slots__})
    return stats

"""The change gate's I/O: samples of a camera's scene, their thumbnails, the comparison.

The scene is never one frame: a car driving through or a flicker of light is in one
frame and gone from the next. So each side of a comparison is up to ``SAMPLES`` frames
``SPACING_S`` apart (see :mod:`service.frames.change` for how they are compared):

* the **reference** is the frame the model judged and the frames that arrive while the
  model looks at it (collected during the call, so it costs no time);
* the **scene now** is the newest frame and the ones right after it, collected when a
  scheduled check is due, within ``BURST_S`` (a wake cuts it short).

Thumbnails are computed in worker threads and shared by every watch of the camera.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import structlog

from service.frames import Frame, FrameError, FrameStore, Thumbnail, Thumbnails, compare_async
from service.watch.machine import Reading

log = structlog.get_logger(__name__)

SAMPLES: Final = 3
SPACING_S: Final = 1.0
"""Least time between two samples: a passing car or a flicker does not last across them."""
BURST_S: Final = 3.0
"""Longest a due check waits for the samples of the scene now (a slow camera gives fewer)."""


class Sampler:
    """Collects and compares samples of one camera's scene.

    Args:
        camera: The camera.
        frames: The shared frame store.
        thumbnails: The shared thumbnail cache.
        seconds_until: The clock's ``seconds_until`` (real seconds to wait for a clock time).
        fetch: Gets a frame from Frigate's API into the store (``None`` without
            ``frigate.url``); returns whether it did.
    """

    def __init__(
        self,
        camera: str,
        frames: FrameStore,
        thumbnails: Thumbnails,
        seconds_until: Callable[[float], float],
        fetch: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.camera = camera
        self.frames = frames
        self.thumbnails = thumbnails
        self.seconds_until = seconds_until
        self.fetch = fetch

    async def follow(self, collected: list[Frame]) -> None:
        """Append frames after ``collected[-1]`` until it holds ``SAMPLES`` (or is cancelled).

        Runs while the model looks at ``collected[0]``; the caller cancels it when the
        answer comes and keeps what was collected. Only frames that arrive on their own
        are taken: fetching from Frigate here would double its load for nothing.
        """
        while len(collected) < SAMPLES:
            last = collected[-1]
            # A timer, not a poll: the next sample must be SPACING_S younger than this one.
            await asyncio.sleep(self.seconds_until(last.received_at + SPACING_S))
            frame = await self.frames.wait_next(self.camera, last.seq, BURST_S * SAMPLES)
            if frame is None or frame.source == "snapshot":
                return
            collected.append(frame)

    async def burst(self, first: Frame, start: float, interrupted: asyncio.Event) -> list[Frame]:
        """``first`` and up to ``SAMPLES - 1`` newer frames, within ``BURST_S`` of ``start``.

        Returns early, with what it has, when ``interrupted`` is set (a wake).
        """
        collected = [first]
        until = start + BURST_S
        while len(collected) < SAMPLES and not interrupted.is_set():
            last = collected[-1]
            not_before = last.received_at + SPACING_S
            if not_before > until:
                break
            if await _wait(interrupted, self.seconds_until(not_before)):
                break
            frame = await self._next(last.seq, until)
            if frame is None:
                break
            collected.append(frame)
        return collected

    async def thumbs(self, frames: Sequence[Frame]) -> list[Thumbnail]:
        """Thumbnails of ``frames``; one that does not decode is left out (and logged)."""
        out: list[Thumbnail] = []
        for frame in frames:
            try:
                out.append(await self.thumbnails.of(frame))
            except FrameError as exc:
                log.debug("watch_thumbnail_failed", seq=frame.seq, reason=exc.reason)
        return out

    async def reading(
        self, reference: Sequence[object], now: Sequence[Frame], threshold: float
    ) -> Reading:
        """Compare the reference thumbnails with thumbnails of ``now``."""
        first_at = now[0].received_at
        current = await self.thumbs(now)
        refs = [t for t in reference if isinstance(t, Thumbnail)]
        if not refs or not current:
            # Nothing to compare with: only the model can say.
            return Reading(changed=True, score=float("inf"), first_at=first_at, samples=0)
        change = await compare_async(refs, current, threshold)
        log.debug(
            "watch_scene_compared",
            changed=change.changed,
            score=round(change.score, 3),
            cells=change.cells,
            lighting=change.lighting,
            samples=len(current),
            references=len(refs),
        )
        return Reading(change.changed, change.score, first_at, len(current))

    async def _next(self, after_seq: int, until: float) -> Frame | None:
        frame = await self.frames.wait_next(self.camera, after_seq, self.seconds_until(until))
        if frame is None and self.fetch is not None and await self.fetch():
            frame = self.frames.latest(self.camera)
            if frame is not None and frame.seq <= after_seq:
                frame = None
        if frame is not None and frame.source == "snapshot":
            return None  # a crop of one object is not the scene
        return frame


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True

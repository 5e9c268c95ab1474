"""Did the scene change? Small grey thumbnails of two moments compared cell by cell.

A watch asks this before a check the model scheduled: when nothing changed since the
frame it last judged, the model's answer cannot change either, and the call is skipped.
The test must be cheap (it runs where a model call would have), blind to what is not a
change of the scene, and see what is:

* **Cheap.** A frame becomes a 64x48 grey thumbnail: libjpeg decodes at 1/2, 1/4 or 1/8
  scale (the DCT does most of the shrinking), one ``INTER_AREA`` resize does the rest.
  Comparing two thumbnails is a few array operations on 3072 numbers. Both run in a
  worker thread (:func:`thumbnail_async`, :func:`compare_async`), never on the event loop.
* **Blind to light.** Each thumbnail is divided by a blurred copy of itself, so what
  remains is the scene's structure rather than its brightness: a flickering lamp, dusk or
  a cloud scale a region's light smoothly and leave the ratio alone. When most of the
  image changes at once it is taken for light too (as Frigate's own motion detector
  does with its ``lightning_threshold``): a thing in the scene changes a few cells.
* **Blind to what passes.** Each side of the comparison is a few samples (the judged
  frame and the ones right after it; the newest frame and the ones right after it), and
  a cell counts as changed only when *every* new sample differs from *every* reference
  sample there. A car driving through, a swaying shadow or a flicker in one sample does
  not hold a cell in every sample; a parcel put down, a car that stopped or a door left
  open does.

Slow change (a driveway filling up, the last light of the day going) adds up against the
judged frame until it crosses the threshold; the watch's ``max_unchanged_s`` ceiling
catches whatever stays below it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from service.frames.jpeg import FrameError, _cv2, _np, jpeg_dimensions
from service.frames.latest import Frame

THUMB_WIDTH: Final = 64
THUMB_HEIGHT: Final = 48
CELL: Final = 4
"""Pixels per cell side: 16x12 cells, each about 0.5 % of the image."""
BLUR_SIGMA: Final = 3.0
"""Scale of the illumination removed: smooth light fields, not objects of a few cells."""
FLOOR: Final = 6.0
"""Grey levels added before dividing, so the noise of a dark night is not amplified."""
LIGHTING_FRACTION: Final = 0.5
"""More than this share of cells changed at once is light (or a moved camera), not a thing."""
CACHED_PER_CAMERA: Final = 8


@dataclass(frozen=True, slots=True, eq=False)
class Thumbnail:
    """A frame reduced for comparison: illumination-normalised grey, 64x48, float32.

    Attributes:
        pixels: The normalised image (about 1.0 on plain surfaces).
        seq: The frame's ``seq`` (0 for one made from an array).
        taken_at: The frame's ``received_at``.
    """

    pixels: Any
    seq: int = 0
    taken_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SceneChange:
    """The answer of :func:`compare`.

    Attributes:
        changed: Something in the scene changed.
        score: The largest cell difference (0 for identical scenes).
        cells: Cells whose difference passed the threshold.
        lighting: So many cells changed that it was taken for light, not a change.
    """

    changed: bool
    score: float
    cells: int
    lighting: bool = False


def thumbnail_from_gray(gray: Any, seq: int = 0, taken_at: float = 0.0) -> Thumbnail:
    """Reduce a grey image (2-D uint8 or float array, any size) to a :class:`Thumbnail`."""
    cv2, np = _cv2(), _np()
    small = cv2.resize(
        np.asarray(gray, dtype=np.float32),
        (THUMB_WIDTH, THUMB_HEIGHT),
        interpolation=cv2.INTER_AREA,
    )
    light = cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
    return Thumbnail((small + FLOOR) / (light + FLOOR), seq, taken_at)


def thumbnail(jpeg: bytes, seq: int = 0, taken_at: float = 0.0) -> Thumbnail:
    """Decode ``jpeg`` at reduced scale in grey and reduce it to a :class:`Thumbnail`.

    Raises:
        FrameError: The JPEG does not decode.
    """
    cv2, np = _cv2(), _np()
    size = jpeg_dimensions(jpeg)
    factor = 1
    if size is not None:
        for candidate in (8, 4, 2):
            # Keep at least twice the thumbnail's size, so INTER_AREA still averages.
            if size[0] // candidate >= 2 * THUMB_WIDTH and size[1] // candidate >= 2 * THUMB_HEIGHT:
                factor = candidate
                break
    flag = {
        1: cv2.IMREAD_GRAYSCALE,
        2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
        4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
        8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
    }[factor]
    try:
        gray = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), flag)
    except cv2.error as exc:
        raise FrameError("decode_failed", f"JPEG does not decode: {exc}") from None
    if gray is None:
        raise FrameError("decode_failed", "JPEG does not decode (corrupt or truncated)")
    return thumbnail_from_gray(gray, seq, taken_at)


def cell_differences(a: Thumbnail, b: Thumbnail) -> Any:
    """Mean absolute difference of two thumbnails per cell (a 12x16 float array)."""
    cv2, np = _cv2(), _np()
    diff = np.abs(a.pixels - b.pixels)
    return cv2.resize(
        diff, (THUMB_WIDTH // CELL, THUMB_HEIGHT // CELL), interpolation=cv2.INTER_AREA
    )


def compare(
    reference: Sequence[Thumbnail], current: Sequence[Thumbnail], threshold: float
) -> SceneChange:
    """Whether the scene of ``current`` differs from that of ``reference``.

    A cell's difference is the smallest over every (reference, current) pair, so only
    what holds in every sample on both sides counts (see the module docstring).

    Args:
        reference: Samples of the scene the model judged (at least one).
        current: Samples of the scene now (at least one).
        threshold: Least cell difference that is a change (``watch.change_threshold``).

    Returns:
        The verdict; with no sample on either side, "changed" (nothing to compare with).
    """
    np = _np()
    if not reference or not current:
        return SceneChange(changed=True, score=float("inf"), cells=0)
    pairs = [cell_differences(r, c) for r in reference for c in current]
    least = np.minimum.reduce(pairs)
    cells = int((least > threshold).sum())
    score = float(least.max())
    if cells > LIGHTING_FRACTION * least.size:
        return SceneChange(changed=False, score=score, cells=cells, lighting=True)
    return SceneChange(changed=cells > 0, score=score, cells=cells)


async def compare_async(
    reference: Sequence[Thumbnail], current: Sequence[Thumbnail], threshold: float
) -> SceneChange:
    """:func:`compare` in a worker thread."""
    return await asyncio.to_thread(compare, tuple(reference), tuple(current), threshold)


class Thumbnails:
    """Thumbnails of recent frames per camera, each computed once in a worker thread.

    Watches of one camera share them; a frame that does not decode raises
    :class:`FrameError` for every caller. Call from the event loop that owns it.
    """

    def __init__(self, per_camera: int = CACHED_PER_CAMERA) -> None:
        self.per_camera = per_camera
        self._cache: dict[str, OrderedDict[int, asyncio.Future[Thumbnail]]] = {}
        self.computed = 0

    async def of(self, frame: Frame) -> Thumbnail:
        """The thumbnail of ``frame`` (raises FrameError when it does not decode)."""
        entries = self._cache.setdefault(frame.camera, OrderedDict())
        fut = entries.get(frame.seq)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(None, thumbnail, frame.jpeg, frame.seq, frame.received_at)
            fut.add_done_callback(_retrieve)
            entries[frame.seq] = fut
            self.computed += 1
            while len(entries) > self.per_camera:
                entries.popitem(last=False)
        return await asyncio.shield(fut)


def _retrieve(fut: asyncio.Future[Thumbnail]) -> None:
    # Marks a failure as seen: a frame nobody waits for any more must not log
    # "exception was never retrieved".
    if not fut.cancelled():
        fut.exception()


async def thumbnail_async(frame: Frame) -> Thumbnail:
    """:func:`thumbnail` of ``frame`` in a worker thread (no cache)."""
    return await asyncio.to_thread(thumbnail, frame.jpeg, frame.seq, frame.received_at)

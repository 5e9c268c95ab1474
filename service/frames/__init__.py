"""Camera frames: the latest JPEG per camera and the way a frame becomes a model input.

:class:`FrameStore` keeps the newest frame of each camera (from lookout's frame topic, or
fetched from Frigate's ``latest.jpg``) and prepares it for a model off the event loop;
:func:`run_grab` feeds a camera that Frigate does not front (`lookout grab`).
"""

from __future__ import annotations

from service.frames.change import (
    SceneChange,
    Thumbnail,
    Thumbnails,
    compare,
    compare_async,
    thumbnail,
    thumbnail_from_gray,
)
from service.frames.grab import run_grab
from service.frames.jpeg import FrameError, LatestJpeg, fetch_latest
from service.frames.latest import Frame, FrameStore
from service.frames.pick import FramePicker, Picked

__all__ = [
    "Frame",
    "FrameError",
    "FramePicker",
    "FrameStore",
    "LatestJpeg",
    "Picked",
    "SceneChange",
    "Thumbnail",
    "Thumbnails",
    "compare",
    "compare_async",
    "fetch_latest",
    "run_grab",
    "thumbnail",
    "thumbnail_from_gray",
]

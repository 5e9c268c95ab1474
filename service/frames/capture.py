"""A video source read by OpenCV on a thread of its own (the blocking half of ``lookout grab``).

A thread opens, reads and releases the ``cv2.VideoCapture``, so a blocking read never
stalls the event loop and no two threads touch the capture. A live source is read
continuously (``grab``: demux and decode) and converted (``retrieve``) only when a frame
is asked for, so the frame handed out is at most one source frame old; reading one frame
per second instead would return ever older frames from the decoder's backlog. A file is
read on demand, skipping frames as asked.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from service.frames.jpeg import QUALITY, fit_height

Opener = Callable[[str | int], Any]
"""Returns an object with ``cv2.VideoCapture``'s isOpened/grab/retrieve/read/get/release."""

_TIMEOUT_MS: Final = 10_000
_Request = tuple[int, "concurrent.futures.Future[Any]"]


@functools.cache
def _cv2() -> Any:
    import cv2  # noqa: PLC0415 -- deferred: only grabbing needs it, not the CLI's start-up

    return cv2


def open_capture(source: str | int) -> Any:
    """The default opener: ``cv2.VideoCapture`` with 10 s open and read timeouts.

    RTSP goes over TCP unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` says otherwise: UDP
    loses packets (smeared frames) on the networks cameras usually sit on.
    """
    cv2 = _cv2()
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    ms = _TIMEOUT_MS
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    return cv2.VideoCapture(source, cv2.CAP_ANY, params)


def encode_frame(img: Any, quality: int = QUALITY, max_height: int | None = None) -> bytes:
    """JPEG-encode a BGR image, first shrinking it to ``max_height`` rows if given (blocking).

    Raises:
        ValueError: The image could not be encoded.
    """
    cv2 = _cv2()
    if max_height is not None:
        img = fit_height(img, max_height)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def redact_source(source: str) -> str:
    """The source without credentials or query string, fit for a log line."""
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return source
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"***@{host}" if parts.username or parts.password else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def source_target(source: str) -> tuple[str | int, bool]:
    """What to hand to the opener, and whether the source is live (a stream or device)."""
    if source.isdigit():
        return int(source), True
    parts = urlsplit(source)
    if parts.scheme == "file":
        return parts.path, False
    return source, len(parts.scheme) > 1


class CaptureReader:
    """One capture, opened, read and released on a thread of its own.

    ``start`` starts the thread and returns a future of ``(width, height, source_fps)``
    (or the open error); ``next_frame`` asks for a frame; ``close`` ends the thread
    after its current read. Every future gets an answer, ``None`` once the capture ends.
    """

    def __init__(self, opener: Opener, target: str | int, live: bool, name: str) -> None:
        self.opened: concurrent.futures.Future[tuple[int, int, float]] = concurrent.futures.Future()
        self._opener = opener
        self._target = target
        self._live = live
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> concurrent.futures.Future[tuple[int, int, float]]:
        """Start the thread; the future resolves once the source is open."""
        self._thread.start()
        return self.opened

    def next_frame(self, skip: int) -> concurrent.futures.Future[Any]:
        """The next due frame (after skipping ``skip`` frames of a file); ``None`` at the end."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                fut.set_result(None)
            else:
                self._requests.put((skip, fut))
        return fut

    def close(self) -> None:
        """Let the thread release the capture and end; never blocks."""
        with self._lock:
            self._closed = True
        self._requests.put(None)

    def _run(self) -> None:
        if not self.opened.set_running_or_notify_cancel():
            return
        cap = None
        try:
            cap = self._opener(self._target)
            if not cap.isOpened():
                raise OSError("the source did not open")
            cv2 = _cv2()
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.opened.set_result((w, h, float(cap.get(cv2.CAP_PROP_FPS) or 0.0)))
            if self._live:
                self._serve_live(cap)
            else:
                self._serve_file(cap)
        except Exception as exc:  # noqa: BLE001 -- thread boundary: the loop gets the error
            if not self.opened.done():
                self.opened.set_exception(exc)
        finally:
            if cap is not None:
                cap.release()
            with self._lock:
                self._closed = True
            self._answer_rest()

    def _serve_file(self, cap: Any) -> None:
        def read(skip: int) -> Any:
            if not all(cap.grab() for _ in range(skip)):
                return None
            ok, img = cap.read()
            return img if ok else None

        while (request := self._requests.get()) is not None:
            if not _fulfil(request[1], functools.partial(read, request[0])):
                return

    def _serve_live(self, cap: Any) -> None:
        def retrieve() -> Any:
            ok, img = cap.retrieve()
            return img if ok else None

        # grab() keeps pace with the source; retrieve() only when someone is waiting.
        while cap.grab():
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                continue
            if request is None or not _fulfil(request[1], retrieve):
                return

    def _answer_rest(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None and request[1].set_running_or_notify_cancel():
                request[1].set_result(None)


def _fulfil(fut: concurrent.futures.Future[Any], read: Callable[[], Any]) -> bool:
    """Answer one frame request on the reader thread; ``False`` once the capture is done."""
    if not fut.set_running_or_notify_cancel():  # the waiter went away
        return True
    try:
        img = read()
    except Exception as exc:  # noqa: BLE001 -- thread boundary: the waiter gets the error
        fut.set_exception(exc)
        return False
    fut.set_result(img)
    return img is not None

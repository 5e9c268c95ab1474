"""JPEG bytes in and out: read the header, re-encode for a model, fetch one from Frigate.

Everything here is a function of bytes with no state. The model input is what Frigate
sends its VLM -- at most 480 px high, JPEG quality 85, base64 data URL -- made cheaper:
the SOF header gives the size without decoding, so libjpeg decodes at 1/2, 1/4 or 1/8
scale (DCT scaling) whenever that still leaves 480 rows or more, and only the remaining
step, always under 2x up to 8K, is resized. ``bench/bench_frames.py`` measures it against
Frigate's full decode + ``INTER_AREA`` (:func:`frigate_reference_prepare`).

cv2 and numpy are imported on first use, not at import time: the frame store, the CLI and
tests that never touch pixels do not pay ~0.15 s of start-up for them.
"""

from __future__ import annotations

import asyncio
import base64
from functools import cache
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from service.settings import NAME_RE

if TYPE_CHECKING:
    import httpx2

MAX_HEIGHT: Final = 480
QUALITY: Final = 85
DATA_URL_PREFIX: Final = "data:image/jpeg;base64,"
SOI: Final = b"\xff\xd8"
EOI: Final = b"\xff\xd9"
# SOF0..SOF15 without DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameError(ValueError):
    """A frame could not be fetched or decoded; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@cache
def _cv2() -> Any:
    import cv2  # noqa: PLC0415 -- deferred: ~0.1 s that only preparing and grabbing need

    return cv2


@cache
def _np() -> Any:
    import numpy  # noqa: PLC0415 -- deferred together with cv2

    return numpy


def load_cv2() -> None:
    """Import cv2 and numpy now (e.g. in a worker thread at start-up) so the first frame is fast."""
    _cv2()
    _np()


def jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """Read ``(width, height)`` from a JPEG's SOF segment without decoding any pixels.

    Walks the marker segments from SOI to the first SOFn (baseline, progressive,
    lossless, arithmetic). Returns ``None`` for anything that is not a well-formed
    JPEG header, including a height of 0 (defined later by a DNL segment).
    """
    n = len(data)
    i = 2 if n >= 4 and data.startswith(SOI) else n
    while i + 3 < n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length field
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in (0xD9, 0xDA) or length < 2:  # EOI or scan data before a frame header
            break
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                break
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return (width, height) if width and height else None
        i += 2 + length
    return None


def choose_reduction(height: int, max_height: int = MAX_HEIGHT) -> int:
    """The largest DCT scale-down (8, 4, 2 or 1) whose output is still ``max_height`` rows or more.

    libjpeg rounds scaled sizes up, so 1080 rows at 1/2 give 540 and 961 rows give 481.
    """
    for factor in (8, 4, 2):
        if -(-height // factor) >= max_height:
            return factor
    return 1


def fit_height(
    img: Any, max_height: int, source_size: tuple[int, int] | None = None, *, area: bool = False
) -> Any:
    """Shrink an image to ``max_height`` rows keeping aspect; never enlarge.

    ``INTER_AREA`` filters a shrink by 2x or more. A smaller last step (what is left after
    a reduced decode: 960x540 to 853x480) uses ``INTER_LINEAR``, which cannot alias below
    2x: it measured within 0.5 dB of ``INTER_AREA`` against Frigate's output (sometimes
    closer) at a sixth of the cost (0.4 ms instead of 2.3 ms at 1080p).

    Args:
        img: A cv2 image (numpy array).
        max_height: The height limit.
        source_size: ``(width, height)`` of the original when ``img`` was decoded at a
            reduced scale; the output width is computed from it so it matches a
            full-size decode exactly.
        area: Always use ``INTER_AREA``, as Frigate does.
    """
    cv2 = _cv2()
    height, width = img.shape[:2]
    if height <= max_height:
        return img
    src_w, src_h = source_size or (width, height)
    new_width = max(1, int(src_w * max_height / src_h))
    interpolation = cv2.INTER_AREA if area or height >= 2 * max_height else cv2.INTER_LINEAR
    return cv2.resize(img, (new_width, max_height), interpolation=interpolation)


def _decode(jpeg: bytes, factor: int) -> Any:
    cv2 = _cv2()
    flag = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }[factor]
    try:
        img = cv2.imdecode(_np().frombuffer(jpeg, dtype=_np().uint8), flag)
    except cv2.error as exc:
        raise FrameError("decode_failed", f"JPEG does not decode: {exc}") from None
    if img is None:
        raise FrameError("decode_failed", "JPEG does not decode (corrupt or truncated)")
    return img


def _encode(img: Any, quality: int) -> bytes:
    cv2 = _cv2()
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameError("encode_failed", "JPEG encoding failed")
    return bytes(buf.tobytes())


def prepare_jpeg_sync(
    jpeg: bytes, max_height: int = MAX_HEIGHT, quality: int = QUALITY, *, area: bool = False
) -> bytes:
    """Re-encode a JPEG at most ``max_height`` high (never upscaled) at ``quality``.

    Decodes at the largest DCT reduction that keeps ``max_height`` rows, then resizes
    (see :func:`fit_height`; ``area`` forces ``INTER_AREA``). Blocking and CPU-bound:
    call it from a worker thread.

    Raises:
        FrameError: The data does not decode as a JPEG.
    """
    dims = jpeg_dimensions(jpeg)
    factor = choose_reduction(dims[1], max_height) if dims else 1
    img = _decode(jpeg, factor)
    if dims is not None and img.shape[0] != -(-dims[1] // factor):
        # An EXIF orientation turned the image, so its height is the header's width.
        dims = (dims[1], dims[0])
        if img.shape[0] != -(-dims[1] // factor):  # neither: trust only the pixels
            dims, factor, img = None, 1, _decode(jpeg, 1)
        elif (better := choose_reduction(dims[1], max_height)) != factor:
            factor, img = better, _decode(jpeg, better)
    return _encode(fit_height(img, max_height, dims, area=area), quality)


def to_data_url(jpeg: bytes) -> str:
    """``data:image/jpeg;base64,...`` for JPEG bytes."""
    return DATA_URL_PREFIX + base64.b64encode(jpeg).decode("ascii")


def frigate_reference_prepare(jpeg: bytes) -> str:
    """Frigate's own pipeline, for benchmarks and quality tests: full decode, resize, encode.

    Raises:
        FrameError: The data does not decode as a JPEG.
    """
    img = fit_height(_decode(jpeg, 1), MAX_HEIGHT, area=True)
    return to_data_url(_encode(img, QUALITY))


class LatestJpeg(NamedTuple):
    """Frigate's ``latest.jpg`` answer: the JPEG, and whether Frigate says the camera is off.

    With no recent frame from a camera, Frigate serves its last preview frame and sets
    ``X-Frigate-Offline: true``: the picture is not what the camera sees now.
    """

    jpeg: bytes
    offline: bool


async def fetch_latest(
    base_url: str,
    camera: str,
    timeout: float,
    *,
    height: int = MAX_HEIGHT,
    max_bytes: int = 8 * 1024 * 1024,
    client: httpx2.AsyncClient | None = None,
) -> LatestJpeg:
    """Fetch ``GET <base_url>/api/<camera>/latest.jpg?height=<height>`` from Frigate.

    Args:
        base_url: Frigate's URL, e.g. ``http://frigate:5000``.
        camera: The camera name.
        timeout: Total seconds for the whole request.
        height: Asked of Frigate, so it resizes before sending.
        max_bytes: A longer body is abandoned.
        client: A shared client; a short-lived one is made when ``None``.

    Raises:
        FrameError: With ``reason`` ``bad_camera``, ``http_unavailable``, ``timeout``,
            ``unreachable``, ``unknown_camera``, ``http_status``, ``too_large`` or ``not_jpeg``.
    """
    if not NAME_RE.fullmatch(camera):
        raise FrameError("bad_camera", f"{camera!r} is not a valid camera name")
    try:
        import httpx2  # noqa: PLC0415 -- only this fallback path needs an HTTP client
    except ImportError:
        raise FrameError("http_unavailable", "httpx2 is not installed") from None
    url = f"{base_url.rstrip('/')}/api/{camera}/latest.jpg"
    own = client is None
    http = client if client is not None else httpx2.AsyncClient(timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            return await _read_jpeg(http, url, camera, height, max_bytes)
    except (TimeoutError, httpx2.TimeoutException):
        raise FrameError("timeout", f"no frame of {camera} from Frigate in {timeout:g}s") from None
    except httpx2.HTTPError as exc:
        raise FrameError("unreachable", f"Frigate request for {camera} failed: {exc!r}") from None
    finally:
        if own:
            await http.aclose()


async def _read_jpeg(
    http: httpx2.AsyncClient, url: str, camera: str, height: int, max_bytes: int
) -> LatestJpeg:
    async with http.stream("GET", url, params={"height": height}) as resp:
        if resp.status_code == 404:
            raise FrameError("unknown_camera", f"Frigate does not know camera {camera!r}")
        if resp.status_code != 200:
            raise FrameError("http_status", f"Frigate answered {resp.status_code} for {camera}")
        offline = resp.headers.get("x-frigate-offline", "").strip().lower() == "true"
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise FrameError("too_large", f"{camera}'s frame is over {max_bytes} bytes")
    if not body.startswith(SOI):
        raise FrameError("not_jpeg", f"Frigate's answer for {camera} is not a JPEG")
    return LatestJpeg(bytes(body), offline)

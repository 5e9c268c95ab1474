"""The pure JPEG layer: header parsing, reduction choice, resizing, quality, Frigate fetch."""

from __future__ import annotations

import asyncio
import base64
import struct

import cv2
import httpx2
import numpy as np
import pytest

from service.frames.jpeg import (
    FrameError,
    choose_reduction,
    fetch_latest,
    fit_height,
    frigate_reference_prepare,
    jpeg_dimensions,
    prepare_jpeg_sync,
    to_data_url,
)


def encode(width: int, height: int, *, progressive: bool = False, quality: int = 90) -> bytes:
    rng = np.random.default_rng(width * 7 + height)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def scene(width: int, height: int, seed: int = 3) -> bytes:
    """A realistic busy frame: gradients, shapes, text, texture and sensor noise, q90."""
    rng = np.random.default_rng(seed)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    texture = cv2.GaussianBlur(rng.standard_normal((height, width), np.float32) * 10, (0, 0), 1)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 60 + 120 * xs / width + texture
    img[..., 1] = 40 + 150 * ys / height + texture
    img[..., 2] = 90 + 60 * np.sin(xs / 97.0) * np.cos(ys / 71.0) + texture
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for i in range(300):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y, size = (
            int(rng.integers(0, width)),
            int(rng.integers(0, height)),
            int(rng.integers(8, 120)),
        )
        if i % 3 == 0:
            cv2.rectangle(canvas, (x, y), (x + size, y + size // 2), color, -1, cv2.LINE_AA)
        elif i % 3 == 1:
            cv2.circle(canvas, (x, y), size // 2, color, -1, cv2.LINE_AA)
        else:
            cv2.line(canvas, (x, y), (x + size, y - size), color, 2, cv2.LINE_AA)
    for i in range(30):
        org = (int(rng.integers(0, width - 200)), int(rng.integers(30, height)))
        cv2.putText(canvas, f"CAM {i:02d}", org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    noisy = np.clip(canvas + rng.standard_normal(canvas.shape, np.float32) * 1.5, 0, 255)
    return cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def from_data_url(url: str) -> bytes:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :], validate=True)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment carrying only the orientation tag right after SOI."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    app1 = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


# ------------------------------------------------------------------ header


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize(
    "size", [(1, 1), (64, 48), (640, 480), (1280, 720), (1920, 1080), (481, 1000)]
)
def test_dimensions_come_from_the_header(size: tuple[int, int], progressive: bool) -> None:
    jpeg = encode(*size, progressive=progressive)
    assert jpeg_dimensions(jpeg) == size


def test_progressive_frame_header_is_sof2() -> None:
    jpeg = encode(64, 48, progressive=True)
    assert b"\xff\xc2" in jpeg
    assert b"\xff\xc0" not in jpeg


def test_dimensions_skip_app_segments_and_fill_bytes() -> None:
    jpeg = with_exif_orientation(encode(320, 200), 1)
    assert jpeg_dimensions(jpeg) == (320, 200)
    padded = jpeg[:2] + b"\xff\xff\xff" + jpeg[2:]  # fill bytes before a marker are legal
    assert jpeg_dimensions(padded) == (320, 200)


def test_dimensions_only_need_the_header() -> None:
    jpeg = encode(640, 480)
    sof = jpeg.index(b"\xff\xc0")
    assert jpeg_dimensions(jpeg[: sof + 9]) == (640, 480)
    assert jpeg_dimensions(jpeg[: sof + 8]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\xff\xd8",
        b"\xff\xd8\xff\xd9",  # SOI EOI
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\xff\xd8\x00\x00\x00\x00",  # no marker after SOI
        b"\xff\xd8\xff\xe0\x00\x01",  # segment length below 2
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # segment runs past the end
        b"\xff\xd8\xff\xda\x00\x08" + bytes(8),  # scan before any frame header
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x02\x80\x03",  # height 0 (DNL)
        bytes(range(256)) * 4,
    ],
)
def test_garbage_has_no_dimensions(data: bytes) -> None:
    assert jpeg_dimensions(data) is None


# ------------------------------------------------------------------ reduction


@pytest.mark.parametrize(
    ("height", "factor"),
    [
        (1080, 2),  # 540
        (2160, 4),  # 540
        (4320, 8),  # 540
        (1440, 2),  # 720; 1/4 would be 360
        (1920, 4),  # 480 exactly
        (961, 2),  # rounds up to 481
        (959, 2),  # rounds up to 480, still enough
        (958, 1),  # 479 would be too few
        (480, 1),
        (600, 1),
        (270, 1),
        (17280, 8),  # beyond 1/8 the rest is resized
    ],
)
def test_largest_reduction_that_keeps_480_rows(height: int, factor: int) -> None:
    assert choose_reduction(height) == factor


def test_reduction_honours_other_limits() -> None:
    assert choose_reduction(1080, 270) == 4
    assert choose_reduction(1080, 1080) == 1


# ------------------------------------------------------------------ output


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), (853, 480)),
        ((3840, 2160), (853, 480)),
        ((1280, 720), (853, 480)),
        ((2560, 1920), (640, 480)),
        ((1080, 1920), (270, 480)),  # portrait
        ((7680, 4320), (853, 480)),
        ((1000, 961), (499, 480)),
    ],
)
def test_output_is_480_high_with_frigates_width(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    jpeg = encode(*size, quality=70)
    ours = decode(prepare_jpeg_sync(jpeg))
    ref = decode(from_data_url(frigate_reference_prepare(jpeg)))
    assert (ours.shape[1], ours.shape[0]) == expected
    assert ours.shape == ref.shape


@pytest.mark.parametrize("size", [(640, 360), (853, 480), (480, 270), (100, 479)])
def test_small_frames_are_never_upscaled(size: tuple[int, int]) -> None:
    out = decode(prepare_jpeg_sync(encode(*size)))
    assert (out.shape[1], out.shape[0]) == size


def test_fit_height_leaves_small_images_alone() -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    assert fit_height(img, 480) is img


def test_output_quality_matches_frigate_within_30db() -> None:
    for size in ((1920, 1080), (2560, 1440)):
        jpeg = scene(*size)
        ref = decode(from_data_url(frigate_reference_prepare(jpeg)))
        for area in (False, True):
            ours = decode(prepare_jpeg_sync(jpeg, area=area))
            psnr = cv2.PSNR(ours, ref)
            assert psnr >= 30, (size, area, psnr)


def test_output_is_jpeg_quality_85() -> None:
    jpeg = scene(1920, 1080)
    out = prepare_jpeg_sync(jpeg)
    img = decode(out)
    same = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    # Re-encoding a q85 image at q85 keeps its size within a few percent; q95 would not.
    assert abs(len(same) - len(out)) / len(out) < 0.1
    assert len(prepare_jpeg_sync(jpeg, quality=95)) > 1.3 * len(out)


def test_exif_rotated_frames_come_out_like_frigates() -> None:
    jpeg = with_exif_orientation(
        encode(1920, 1080, quality=70), 6
    )  # stored landscape, shown portrait
    ours = decode(prepare_jpeg_sync(jpeg))
    ref = decode(from_data_url(frigate_reference_prepare(jpeg)))
    assert ours.shape == ref.shape == (480, 270, 3)
    assert cv2.PSNR(ours, ref) >= 30


def test_data_url_round_trips() -> None:
    jpeg = encode(64, 48)
    assert from_data_url(to_data_url(jpeg)) == jpeg


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9",
        b"\xff\xd8\xff\xd9",
        b"not a jpeg at all",
    ],
)
def test_undecodable_data_raises_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError) as err:
        prepare_jpeg_sync(data)
    assert err.value.reason == "decode_failed"
    assert isinstance(err.value, ValueError)
    with pytest.raises(FrameError):
        frigate_reference_prepare(data)


# ------------------------------------------------------------------ Frigate HTTP


def client_for(handler: httpx2.MockTransport) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=handler)


async def test_fetch_latest_asks_frigate_for_480_rows() -> None:
    jpeg = encode(853, 480)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, content=jpeg, headers={"content-type": "image/jpeg"})

    async with client_for(httpx2.MockTransport(handler)) as client:
        got = (await fetch_latest("http://frigate:5000/", "front_door", 2.0, client=client)).jpeg
    assert got == jpeg
    assert str(seen[0].url) == "http://frigate:5000/api/front_door/latest.jpg?height=480"
    assert seen[0].method == "GET"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (404, b"Camera not found", "unknown_camera"),
        (500, b"boom", "http_status"),
        (200, b"<html>login</html>", "not_jpeg"),
        (200, b"\xff\xd8" + bytes(2000), "too_large"),
    ],
)
async def test_fetch_latest_failures_carry_a_reason(status: int, body: bytes, reason: str) -> None:
    transport = httpx2.MockTransport(lambda _req: httpx2.Response(status, content=body))
    async with client_for(transport) as client:
        with pytest.raises(FrameError) as err:
            await fetch_latest("http://frigate", "cam", 2.0, max_bytes=1000, client=client)
    assert err.value.reason == reason


async def test_fetch_latest_connection_errors_and_timeouts() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("read timed out", request=request)

    for handler, reason in ((refuse, "unreachable"), (slow, "timeout")):
        async with client_for(httpx2.MockTransport(handler)) as client:
            with pytest.raises(FrameError) as err:
                await fetch_latest("http://frigate", "cam", 2.0, client=client)
        assert err.value.reason == reason


async def test_fetch_latest_enforces_the_total_deadline() -> None:
    never = asyncio.Event()

    async def hang(_request: httpx2.Request) -> httpx2.Response:
        await never.wait()
        raise AssertionError("unreachable")

    async with client_for(httpx2.MockTransport(hang)) as client:
        with pytest.raises(FrameError) as err:
            await fetch_latest("http://frigate", "cam", 0.01, client=client)
    assert err.value.reason == "timeout"


async def test_fetch_latest_rejects_unsafe_camera_names() -> None:
    with pytest.raises(FrameError) as err:
        await fetch_latest("http://frigate", "../config", 1.0)
    assert err.value.reason == "bad_camera"

"""`lookout grab` publishes frames from a local video file to a real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.broker import REPO
from tests.mqttc import next_message

pytestmark = pytest.mark.e2e


def write_video(path: Path, frames: int = 12) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for n in range(frames):
        img = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(img, (10 * n, 40), (10 * n + 60, 120), (0, 0, 255), -1)
        writer.write(img)
    writer.release()


async def test_grab_publishes_jpeg_frames_from_a_file(broker, mqtt, tmp_path: Path):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    video = tmp_path / "clip.avi"
    write_video(video)
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(
        yaml.safe_dump({"mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": prefix}})
    )
    frames = await mqtt.subscribe(f"{prefix}/camera/backyard/frame", qos=0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "grab", str(video), "--camera", "backyard",
        "--fps", "20", "--max-frames", "3", "--config", str(cfg),
        cwd=REPO, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"3 frames published" in err
    for _ in range(3):
        jpeg = (await next_message(frames)).payload
        assert jpeg[:2] == b"\xff\xd8"
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[:2] == (240, 320)


async def test_grab_from_a_missing_file_exits_1(broker, tmp_path: Path):
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(yaml.safe_dump({"mqtt": {"host": broker.host, "port": broker.port}}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "grab", str(tmp_path / "nope.avi"), "--camera", "x",
        "--config", str(cfg), cwd=REPO, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err.decode()

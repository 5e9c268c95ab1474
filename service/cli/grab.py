"""`lookout grab`: feed a camera Frigate does not front into lookout's frame topic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid

import structlog

from service.frames import run_grab
from service.mqtt import BusAuthError, MqttBus, TopicMap
from service.settings import NAME_RE, Settings

log = structlog.get_logger(__name__)


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register `grab` and its options."""
    grab = sub.add_parser(
        "grab",
        parents=[common],
        help="publish frames from an RTSP, HTTP or file source as a lookout camera",
        description="Read a video source with OpenCV and publish JPEG frames to "
        "<prefix>/camera/<camera>/frame at a steady rate, reconnecting when it drops.",
    )
    grab.add_argument("source", help="rtsp://…, http(s)://… (MJPEG), a device index or a file")
    grab.add_argument("--camera", required=True, help="the camera name to publish as")
    grab.add_argument("--fps", type=float, default=1.0, help="frames per second (default 1)")
    grab.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    grab.add_argument("--max-height", type=int, help="scale frames down to this height")
    grab.add_argument("--loop", action="store_true", help="restart a file at its end")
    grab.add_argument("--max-frames", type=int, help="stop after this many frames")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run `lookout grab` until the source ends, ``--max-frames``, or SIGTERM/Ctrl-C."""
    if not NAME_RE.fullmatch(args.camera):
        print(f"lookout: {args.camera!r} is not a valid camera name", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_grab(settings, args))
    except KeyboardInterrupt:
        return 130


async def _grab(settings: Settings, args: argparse.Namespace) -> int:
    topics = TopicMap(settings.mqtt.topic_prefix, settings.frigate.topic_prefix)
    mqtt = settings.mqtt.model_copy(update={"client_id": f"lookout-grab-{uuid.uuid4().hex[:8]}"})
    bus = MqttBus(mqtt, topics, [], announce=False, persistent=False)
    topic = topics.frame.format(camera=args.camera)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def publish(jpeg: bytes) -> None:
        # QoS 1 so a frame is on the broker before the next one is read (and before we
        # exit); lookout subscribes at QoS 0, so the broker never queues frames for it.
        await bus.publish(topic, jpeg, qos=1, timeout=10.0)

    bus_task = asyncio.create_task(bus.run(), name="grab-bus")
    try:
        stats = await run_grab(
            args.source,
            args.camera,
            publish,
            fps=args.fps,
            quality=args.quality,
            max_height=args.max_height,
            loop_file=args.loop,
            max_frames=args.max_frames,
            stop=stop,
        )
    finally:
        bus_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BusAuthError, Exception):
            await bus_task
    print(
        f"grab {args.camera}: {stats.published} frames published, ended: {stats.reason}",
        file=sys.stderr,
    )
    return 1 if stats.reason in ("open_failed", "gave_up") else 0

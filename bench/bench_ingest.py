"""Frame ingest: 16 cameras x 5 frames/s of 500 kB JPEGs, next to a bare aiomqtt subscriber.

Run: ``.venv/bin/python bench/bench_ingest.py [--quick]``. ``run(quick)`` returns the rows
for ``bench/run_all.py``.

The frames go to ``<prefix>/camera/<cam>/frame`` at QoS 0 for 60 s (``--quick``: 10 s),
paced per tick, from this process. The real ``lookout run`` process and, at the same
time, a reference process that only subscribes with aiomqtt and counts receive the same
stream. CPU is utime + stime from ``/proc/<pid>/stat`` over the stream, as a share of one
core. lookout keeps only the latest frame per camera, so its RSS must stay flat: it is
sampled every second and the last sample is compared with the one a few seconds in.
Targets: lookout under 15 % of one core; RSS flat (growth under 3 MB); every frame taken.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import CpuMeter, Stack, StackConfig
from bench.table import render, row

CAMERAS, FPS, SECONDS, QUICK_SECONDS = 16, 5, 60.0, 10.0
RSS_FLAT_MB = 3.0

# The reference: the least a Python MQTT client can do with this stream.
SUBSCRIBER = """
import asyncio, sys, aiomqtt
async def main():
    n = 0
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier=sys.argv[3]) as c:
        await c.subscribe(sys.argv[2], qos=0)
        print("ready", flush=True)
        reader = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
        async def count():
            nonlocal n
            async for _ in c.messages:
                n += 1
        counter = asyncio.ensure_future(count())
        await reader
        counter.cancel()
    print(n, flush=True)
asyncio.run(main())
"""


def camera_frame() -> bytes:
    """A busy 1080p JPEG of about 515 kB (see ``bench_frames.synthetic_frame``)."""
    from bench.bench_frames import synthetic_frame

    return synthetic_frame(1920, 1080)


@dataclass
class IngestResult:
    """What one run of the stream measured."""

    published: int = 0
    frame_bytes: int = 0
    seconds: float = 0.0
    lookout_cores: float = 0.0
    reference_cores: float = 0.0
    lookout_received: int = 0
    reference_received: int = 0
    rss: list[float] = field(default_factory=list)
    late_ticks: int = 0


class Subscriber:
    """The reference process."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SUBSCRIBER, str(self.stack.broker.port),
            f"{self.stack.prefix}/camera/+/frame", f"{self.stack.prefix}-ref",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the reference subscriber did not start: {line!r}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> int:
        """Stop it; the number of frames it received."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(20):
            count = int((await self.proc.stdout.readline()).strip() or b"-1")
            await self.proc.wait()
        return count


async def _frames_received(stack: Stack) -> int:
    from tests.mqttc import request

    health = (await request(stack.client, stack.prefix, "bench", "health", {}))[-1]
    return int(health["frames"]["received"])


async def stream(
    stack: Stack, seconds: float, cameras: int = CAMERAS, fps: int = FPS
) -> IngestResult:
    """Publish the stream to a running :class:`Stack`; measure lookout and the reference."""
    frame = await asyncio.to_thread(camera_frame)
    names = [f"cam{i:02d}" for i in range(cameras)]
    reference = Subscriber(stack)
    await reference.start()
    result = IngestResult(frame_bytes=len(frame))
    before = await _frames_received(stack)
    ours, theirs = CpuMeter(stack.pid), CpuMeter(reference.pid)
    loop = asyncio.get_running_loop()
    ticks = round(seconds * fps)
    try:
        ours.start()
        theirs.start()
        started = loop.time()
        for tick in range(ticks):
            for name in names:
                await stack.client.publish(f"{stack.prefix}/camera/{name}/frame", frame, qos=0)
                result.published += 1
            if tick % fps == 0:
                result.rss.append(stack.rss_mb())
            # Pacing of the load generator, not a wait for a condition.
            delay = started + (tick + 1) / fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.late_ticks += 1
        result.seconds = loop.time() - started
        # Every frame was handed to the broker; a health request queued behind them
        # comes back once lookout has taken them all in.
        result.lookout_received = await _frames_received(stack) - before
        result.lookout_cores = ours.stop()
        result.reference_cores = theirs.stop()
        result.rss.append(stack.rss_mb())
    finally:
        result.reference_received = await reference.stop()
    return result


def rows_for(result: IngestResult, cameras: int = CAMERAS, fps: int = FPS) -> list[dict[str, Any]]:
    """The table rows of one :func:`stream`."""
    pct, ref_pct = result.lookout_cores * 100, result.reference_cores * 100
    mb_s = result.published * result.frame_bytes / result.seconds / 1e6
    settled = result.rss[min(2, len(result.rss) - 1)]
    growth = result.rss[-1] - settled
    return [
        row(f"frame ingest {cameras} cams x {fps}/s x {result.frame_bytes // 1000} kB "
            f"({mb_s:.0f} MB/s, "
            f"{result.seconds:.0f} s): CPU (% of a core)", pct, ref_pct, "< 15 %", pct < 15),
        row("  frames taken in (lookout vs the bare subscriber)", result.lookout_received,
            result.reference_received, f"all {result.published}",
            result.lookout_received == result.published),
        row(f"  RSS during ingest (MB): {settled:.1f} -> {result.rss[-1]:.1f}", growth, None,
            f"flat (< {RSS_FLAT_MB:g} MB growth)", growth < RSS_FLAT_MB, " MB"),
    ]  # fmt: skip


async def run_async(seconds: float, cameras: int) -> list[dict[str, Any]]:
    async with Stack(StackConfig(llm=False)) as stack:
        return rows_for(await stream(stack, seconds, cameras), cameras)


def run(quick: bool = False, smoke: bool = False) -> list[dict[str, Any]]:
    """The benchmark rows (``figure, lookout, reference, ratio, target, met``)."""
    if smoke:
        return asyncio.run(run_async(2.0, 4))
    return asyncio.run(run_async(QUICK_SECONDS if quick else SECONDS, CAMERAS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s instead of {SECONDS:g}"
    )
    parser.add_argument("--smoke", action="store_true", help="4 cameras for 2 s")
    args = parser.parse_args()
    started = time.perf_counter()
    print(render(run(quick=args.quick, smoke=args.smoke)))
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

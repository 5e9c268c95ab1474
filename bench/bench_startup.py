"""Start-up time to `online` and idle RSS of `lookout run`, next to a minimal aiomqtt client.

The reference is the floor for any Python MQTT service here: an interpreter that imports
aiomqtt, connects and publishes a retained `online`. Run: .venv/bin/python bench/bench_startup.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.table import render, row  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.mqttc import MqttTestClient, next_message  # noqa: E402

REFERENCE = """
import asyncio, sys, aiomqtt
async def main():
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier=sys.argv[3]) as c:
        await c.publish(sys.argv[2], b"online", qos=1, retain=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(broker: Broker, argv_for: Any, idle_s: float) -> tuple[float, float]:
    prefix = f"bs{uuid.uuid4().hex[:8]}"
    async with MqttTestClient(broker.host, broker.port) as c:
        queue = await c.subscribe(f"{prefix}/status")
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv_for(prefix), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while (await next_message(queue, 30)).payload != b"online":
                pass
            startup = time.perf_counter() - start
            await asyncio.sleep(idle_s)  # idle on purpose: this is what we measure
            rss = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    return startup, rss


async def run_async(quick: bool) -> list[dict[str, Any]]:
    broker = Broker()
    broker.start()
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
    repeats, idle = (2, 1.0) if quick else (5, 3.0)

    def lookout(prefix: str) -> list[str]:
        cfg = tmp / f"{prefix}.yml"
        cfg.write_text(
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: {prefix}, client_id: {prefix}}}\n"
            f"store: {{url: 'sqlite:///{tmp}/{prefix}.db'}}\nlog: {{level: warning, format: json}}\n"
        )
        return [sys.executable, "-m", "service", "run", "--config", str(cfg)]

    def reference(prefix: str) -> list[str]:
        return [sys.executable, "-c", REFERENCE, str(broker.port), f"{prefix}/status", prefix]

    try:
        ours = [await measure(broker, lookout, idle) for _ in range(repeats)]
        ref = [await measure(broker, reference, idle) for _ in range(repeats)]
    finally:
        broker.close()
    s_ours, s_ref = statistics.median(x[0] for x in ours), statistics.median(x[0] for x in ref)
    r_ours, r_ref = statistics.median(x[1] for x in ours), statistics.median(x[1] for x in ref)
    return [
        row("start-up to online (s)", s_ours, s_ref, "< 1.5 s", s_ours < 1.5),
        row("idle RSS (MB)", r_ours, r_ref, "< 130 MB", r_ours < 130),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(run_async(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    print(render(run(parser.parse_args().quick)))

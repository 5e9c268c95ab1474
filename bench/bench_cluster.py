"""Several workers as one service: chats per second on one worker and on two, side by side,
and the time from SIGKILL of a worker to the first alert of the watch another one took over.

Each worker is the real ``lookout run`` in cluster mode (shared subscriptions, a private
PostgreSQL from Debian's binaries, ``tests.pg``), behind one mosquitto. The model is the
fake OpenAI server in a process of its own, streaming a short answer as fast as it can,
so the load is lookout's own CPU. A closed loop of ``CONCURRENCY`` clients keeps chats in
flight for ``SECONDS`` and counts the answers; the first delta of each is timed from its
publish. One worker and two workers run the same loop against a fresh database each.

Run alone: ``.venv/bin/python bench/bench_cluster.py [--quick | --smoke]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import FakeLLMProcess, pct  # noqa: E402
from bench.table import render, row  # noqa: E402

SIZES = {  # seconds of load, clients in flight
    "full": (20.0, 256),
    "quick": (6.0, 256),
    "smoke": (1.5, 16),
}
TAKEOVER_S = 15.0


class Cluster:
    """A broker, PostgreSQL, the fake model and ``n`` workers (async context manager)."""

    def __init__(self, workers: int, *, llm_url: str, db_url: str, takeover_s: float) -> None:
        self.n = workers
        self.llm_url = llm_url
        self.db_url = db_url
        self.takeover_s = takeover_s
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.root = Path(tempfile.mkdtemp(prefix="lookout-cluster-"))
        self.workers: dict[str, Any] = {}
        self.llm_pid = 0
        self.cores: dict[str, float] = {}
        """Share of a core each process used during the load."""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Cluster:
        from tests.broker import Broker
        from tests.conftest import Worker
        from tests.mqttc import MqttTestClient

        try:
            self.broker = Broker()
            self.broker.start()
            self._stack.callback(self.broker.close)
            self.client = await self._stack.enter_async_context(
                MqttTestClient(self.broker.host, self.broker.port)
            )
            for i in range(1, self.n + 1):
                name = f"w{i}"
                cfg = {
                    "limits": {"requests_per_minute": 0},
                    "chat": {"max_concurrent": 512},
                    "log": {"level": "info", "format": "json"},
                    "frigate": {"topic_prefix": f"{self.prefix}fr"},
                    "watch": {"min_interval_s": 0.5},
                    "store": {"url": self.db_url},
                    "cluster": {"enabled": True, "worker_name": name,
                                "takeover_s": self.takeover_s},
                    "llm": {"providers": {"fake": {
                        "base_url": self.llm_url, "model": "fake-model",
                        "max_retries": 0, "timeout_s": 30}}},
                }  # fmt: skip
                worker = Worker(self.broker, self.root / name, self.prefix, config=cfg)
                self._stack.callback(worker.stop)
                self.workers[name] = worker
            statuses = []
            for name, worker in self.workers.items():
                statuses.append(await self.client.subscribe(f"{self.prefix}/worker/{name}/status"))
                worker.start()
            async with asyncio.timeout(60):
                for queue in statuses:
                    while (await queue.get()).payload != b"online":
                        pass
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        shutil.rmtree(self.root, ignore_errors=True)


async def load(
    cluster: Cluster, seconds: float, concurrency: int
) -> tuple[float, list[float], int]:
    """A closed loop: ``concurrency`` chats in flight for ``seconds``.

    Returns:
        Chats answered per second, first-delta latencies (ms), and errors.
    """
    p = cluster.prefix
    # QoS 0 on the replies: the load generator shares the two cores with the workers, and
    # acknowledging every reply would cost it as much again.
    queue = await cluster.client.subscribe(f"{p}/+/reply/+", qos=0)
    sent: dict[str, float] = {}
    first: dict[str, float] = {}
    finished: dict[str, asyncio.Event] = {}
    errors = 0

    async def read() -> None:
        nonlocal errors
        while True:
            msg = await queue.get()
            now = time.perf_counter()
            body = msg.json()
            rid = body.get("id")
            if rid not in sent:
                continue
            if body["type"] == "content" and rid not in first:
                first[rid] = (now - sent[rid]) * 1000
            if body["type"] in ("done", "error"):
                errors += body["type"] == "error"
                finished[rid].set()

    answered = 0
    stop_at = 0.0

    async def client(index: int) -> None:
        nonlocal answered
        user = f"u{index % 8}"
        while time.perf_counter() < stop_at:
            rid = uuid.uuid4().hex[:16]
            finished[rid] = asyncio.Event()
            sent[rid] = time.perf_counter()
            await cluster.client.publish(f"{p}/{user}/chat", {"id": rid, "text": "who came by?"})
            async with asyncio.timeout(60):
                await finished[rid].wait()
            if time.perf_counter() <= stop_at:
                answered += 1

    reader = asyncio.create_task(read(), name="bench-cluster-replies")
    cpu0 = _cpu_by_process(cluster)
    try:
        # A short warm-up at the same load (imports, connection pools), not counted.
        stop_at = time.perf_counter() + min(2.0, seconds / 3)
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        answered, errors = 0, 0
        first.clear()
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        rate = answered / elapsed
        cpu1 = _cpu_by_process(cluster)
        cluster.cores = {k: round((cpu1[k] - cpu0.get(k, 0.0)) / elapsed, 2) for k in cpu1}
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return rate, list(first.values()), errors


def _cpu_by_process(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far: each worker, the broker, PostgreSQL (all its processes), us."""
    import os

    from bench.harness import cpu_seconds

    out = {name: cpu_seconds(w.proc.pid) for name, w in cluster.workers.items()}
    if cluster.broker.proc is not None:
        out["mosquitto"] = cpu_seconds(cluster.broker.proc.pid)
    postgres = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                    postgres += cpu_seconds(int(pid))
    out["postgres"] = postgres
    if cluster.llm_pid:
        out["fake model"] = cpu_seconds(cluster.llm_pid)
    out["bench client"] = cpu_seconds(os.getpid())
    return out


async def kill_to_alert(llm_url: str, db_url: str) -> float:
    """Seconds from SIGKILL of a watch's worker to the first alert from its new owner."""
    from tests.e2e.test_watch import BLUE, RED, frame
    from tests.mqttc import request

    async with Cluster(2, llm_url=llm_url, db_url=db_url, takeover_s=TAKEOVER_S) as cluster:
        p = cluster.prefix
        client = cluster.client
        await frame(client, p, BLUE)
        out = await request(
            client, p, "erin", "watch",
            {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
        )  # fmt: skip
        job_id = out[-1]["job_id"]
        owner = None
        async with asyncio.timeout(30):
            while owner is None:
                section = (await request(client, p, "probe", "health", {}))[-1]["cluster"]
                owner = section["watch_owners"].get(job_id)
        alerts = await client.subscribe(f"{p}/erin/watch/{job_id}/alert")
        await frame(client, p, RED)  # the scene the new owner looks at when it takes over
        # The owner's last verdict was on the blue frame; kill it before it looks again.
        killed_at = time.perf_counter()
        cluster.workers[owner].kill()
        async with asyncio.timeout(TAKEOVER_S * 3):
            while True:
                body = (await alerts.get()).json()
                if body.get("status") == "success":
                    return time.perf_counter() - killed_at


async def run_async(size: str) -> list[dict[str, Any]]:
    from tests.pg import PrivatePostgres, fresh_database

    seconds, concurrency = SIZES[size]
    pg = PrivatePostgres()
    pg.start()
    llm = FakeLLMProcess()
    try:
        await llm.start()
        await llm.set_responder("fast_answer")
        results = {}
        for workers in (1, 2):
            async with Cluster(
                workers, llm_url=llm.base_url, db_url=fresh_database(pg.url), takeover_s=TAKEOVER_S
            ) as cluster:
                cluster.llm_pid = llm.proc.pid if llm.proc is not None else 0
                results[workers] = (*await load(cluster, seconds, concurrency), cluster.cores)
                print(f"[{workers} worker(s): cores used {cluster.cores}]", file=sys.stderr)
            await llm.reset()
        await llm.set_responder("colour_verdict")
        takeover = await kill_to_alert(llm.base_url, fresh_database(pg.url))
    finally:
        await llm.close()
        pg.close()
    (one, first1, err1, cores1), (two, first2, err2, cores2) = results[1], results[2]
    workers1 = cores1.get("w1", 0.0)
    workers2 = cores2.get("w1", 0.0) + cores2.get("w2", 0.0)
    others2 = sum(v for k, v in cores2.items() if not k.startswith("w"))
    others = ", ".join(f"{k} {v:.2f}" for k, v in cores2.items() if not k.startswith("w"))
    p99_1, p99_2 = pct(first1, 0.99), pct(first2, 0.99)
    ratio = two / one if one else 0.0
    return [
        row(f"chats/s sustained, 2 workers vs 1 ({concurrency} in flight, {seconds:g} s; "
            f"errors {err2}/{err1})", two, one, "ratio >= 1.7", ratio >= 1.7 and not err1 + err2),
        row("  first delta p99 at that load (ms): 2 workers vs 1", p99_2, p99_1, "info", True),
        row("  first delta p50 at that load (ms): 2 workers vs 1", pct(first2, 0.5),
            pct(first1, 0.5), "info", True),
        row("  lookout CPU per chat (ms): 2 workers vs 1", workers2 / two * 1000 if two else 0,
            workers1 / one * 1000 if one else None, "info", True),
        row(f"  cores busy during the 2-worker load: workers {workers2:.2f}, others "
            f"{others2:.2f} ({others})", workers2 + others2, 2.0, "info: the machine's 2", True),
        row(f"SIGKILL of a watch's worker to the first alert from its new owner (s; "
            f"takeover_s {TAKEOVER_S:g})", takeover, TAKEOVER_S, "< takeover_s",
            takeover < TAKEOVER_S),
    ]  # fmt: skip


def run(quick: bool = False, size: str | None = None) -> list[dict[str, Any]]:
    """The section's rows (``size``: full, quick or smoke)."""
    return asyncio.run(run_async(size or ("quick" if quick else "full")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(render(run(size=size)))


if __name__ == "__main__":
    main()

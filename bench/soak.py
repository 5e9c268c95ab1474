"""Soak: a steady mix of lookout's work for N seconds, against a real broker and worker.

Run: ``.venv/bin/python bench/soak.py [--seconds 600] [--json]``. ``run(seconds)`` returns
the figures as a dict (``tests/e2e/test_soak.py`` runs a 60-second variant in CI).

It starts a mosquitto of its own, the fake OpenAI server (in this process) and the real
``lookout run`` process, then keeps up, every second: two chats whose model calls a tool
first (``search_objects`` or ``get_live_context``), two direct tool requests, one
``health``, two frames per camera (three cameras), about five Frigate event messages and
a review; every 15 s a camera watch (one minute long, checked by the fake vision model,
which says the condition is met one time in five). Every 20th chat gets an HTTP 500 from
the model server: an injected fault, answered ``llm_unavailable``.

Figures: requests sent and answered (equal, or replies were lost), terminal replies per
request (exactly one), errors by code (expected vs not), watch alerts, RSS and open file
descriptors of the worker sampled every 10 s (first, last, max), reply latency, and every
log line at level error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.broker import Broker  # noqa: E402
from tests.fake_llm import FakeLLM, RecordedRequest, Reply, error, text, tool_calls  # noqa: E402
from tests.frigate_replay import review_object, tracked_object  # noqa: E402
from tests.mqttc import MqttTestClient, Received, next_message  # noqa: E402

CAMERAS = ("front", "drive", "yard")
SAMPLE_EVERY_S = 10.0
WARMUP_S = 10.0
"""The first RSS/fd sample is taken after this much traffic (imports, pools, caches)."""
FAULT_EVERY = 20
EXPECTED_ERRORS = frozenset({"llm_unavailable"})
"""Error codes the soak injects on purpose (the model server's 500s)."""
EXPECTED_ERROR_EVENTS: frozenset[str] = frozenset()
"""Log events at level error that the injected faults may cause (none do)."""
DRAIN_TIMEOUT_S = 30.0


@dataclass
class Tally:
    """What was sent and what came back, per request id."""

    sent: dict[str, tuple[str, float]] = field(default_factory=dict)
    """id -> (kind, loop time sent)."""
    terminals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    answered: int = 0
    alerts: int = 0
    frames: int = 0
    frigate_messages: int = 0
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def outstanding(self) -> int:
        return len(self.sent) - self.answered

    def take(self, msg: Received, now: float) -> None:
        if msg.topic.endswith("/alert"):
            self.alerts += 1
            return
        body = msg.json()
        if body.get("type") not in ("done", "error"):
            return
        rid = body["id"]
        self.terminals.setdefault(rid, []).append(body)
        if rid in self.sent and len(self.terminals[rid]) == 1:
            self.answered += 1
            kind, at = self.sent[rid]
            self.latency_ms.setdefault(kind, []).append((now - at) * 1000)
        if not self.outstanding():
            self.all_answered.set()


def sample(pid: int) -> tuple[float, int]:
    """RSS in MB and the number of open file descriptors of ``pid``."""
    rss = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def make_responder(seed: int = 7) -> Any:
    """The fake model: tools first, then an answer; verdicts for watches; some 500s."""
    rng = random.Random(seed)
    turns = itertools.count()

    def respond(request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        n = next(turns)
        if body.get("response_format") is not None:  # a watch asks for a verdict
            met = rng.random() < 0.2
            verdict = {
                "condition_met": met,
                "next_run_in": 5,
                "reasoning": "a fox on the lawn" if met else "only the lawn",
                "notification_message": "A fox is on the lawn." if met else "",
            }
            return text(json.dumps(verdict), chunk_size=40)
        last = request.last_message or {}
        if last.get("role") == "user" and "FAULT" in str(last.get("content")):
            return error(500, "injected fault")
        if request.tools and last.get("role") == "user":
            camera = CAMERAS[n % len(CAMERAS)]
            if n % 2:
                return tool_calls([("search_objects", {"label": "person", "limit": 5})])
            return tool_calls([("get_live_context", {"camera": camera})])
        return text(f"Answer {n}: nothing unusual on the cameras.", chunk_size=6)

    return respond


def jpeg_frame(width: int = 640, height: int = 360) -> bytes:
    """A camera-like JPEG (a gradient with noise), about 40 KB."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    image = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("could not encode the soak frame")
    return bytes(buf)


class Soak:
    """One soak run: the broker, the fake model, the worker and the traffic."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.prefix = f"soak{uuid.uuid4().hex[:6]}"
        self.fp = f"{self.prefix}fr"
        self.tmp = Path(tempfile.mkdtemp(prefix="lookout-soak-"))
        self.tally = Tally()
        self.samples: list[tuple[float, float, int]] = []
        self.frame = jpeg_frame()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: MqttTestClient | None = None

    def _config(self, broker: Broker, fake: FakeLLM) -> Path:
        cfg = {
            "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": self.prefix,
                     "client_id": self.prefix},
            "frigate": {"topic_prefix": self.fp},
            "llm": {"providers": {"fake": {"base_url": fake.base_url, "api_key": "sk-soak",
                                           "model": "fake-model", "max_retries": 0,
                                           "timeout_s": 10}}},
            # The soak is one client sending for many users; per-caller rate limits are
            # exercised elsewhere.
            "limits": {"requests_per_minute": 0},
            "watch": {"max_active": 32, "max_active_per_user": 8, "min_interval_s": 2},
            "store": {"url": f"sqlite:///{self.tmp / 'lookout.db'}"},
            "log": {"level": "info", "format": "json"},
        }  # fmt: skip
        path = self.tmp / "lookout.yml"
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return path

    async def send(self, user: str, kind: str, body: dict[str, Any]) -> None:
        assert self.client is not None
        rid = uuid.uuid4().hex[:12]
        self.tally.sent[rid] = (kind.split("/", maxsplit=1)[0], asyncio.get_running_loop().time())
        self.tally.all_answered.clear()
        await self.client.publish(f"{self.prefix}/{user}/{kind}", {"id": rid, **body})

    async def _every(self, period: float, action: Any, stop: asyncio.Event) -> None:
        """Call ``action(n)`` every ``period`` seconds until ``stop`` (the load's pacing)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in itertools.count():
            await action(n)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(start + (n + 1) * period):
                    await stop.wait()
            if stop.is_set():
                return

    async def chat(self, n: int) -> None:
        fault = " FAULT" if n % FAULT_EVERY == FAULT_EVERY - 1 else ""
        await self.send(f"chat{n % 4}", "chat", {"text": f"anything on the cameras?{fault}"})

    async def tool(self, n: int) -> None:
        calls = [
            ("search_objects", {"camera": CAMERAS[n % 3], "limit": 10}),
            ("get_live_context", {"camera": CAMERAS[n % 3]}),
            ("get_profile_status", {}),
            ("get_recap", {"after": "2000-01-01", "before": "2100-01-01"}),
        ]
        name, arguments = calls[n % len(calls)]
        await self.send("toolbox", "tool", {"tool_name": name, "arguments": arguments})

    async def health(self, _n: int) -> None:
        await self.send("ops", "health", {})

    async def frames(self, _n: int) -> None:
        assert self.client is not None
        for camera in CAMERAS:
            await self.client.publish(f"{self.prefix}/camera/{camera}/frame", self.frame, qos=0)
            self.tally.frames += 1

    async def events(self, n: int) -> None:
        """One object's life per tick, rotating cameras: new, update, end (+ a review)."""
        assert self.client is not None
        camera = CAMERAS[n % 3]
        now = time.time()
        oid = f"{now:.6f}-{uuid.uuid4().hex[:6]}"
        obj = tracked_object(oid, camera, "person", now, now, current=["lawn"], entered=["lawn"])
        done = tracked_object(oid, camera, "person", now, now + 1, entered=["lawn"], end=now + 1)
        messages = [("new", obj), ("update", obj), ("end", done)]
        for kind, after in messages:
            await self.client.publish(
                f"{self.fp}/events", {"type": kind, "before": obj, "after": after}
            )
        review = review_object(f"r{oid}", camera, now, "alert", detections=[oid],
                               objects=["person"], zones=["lawn"], end=now + 1)  # fmt: skip
        await self.client.publish(
            f"{self.fp}/reviews", {"type": "end", "before": review, "after": review}
        )
        self.tally.frigate_messages += len(messages) + 1

    async def watch(self, n: int) -> None:
        await self.send(
            f"watcher{n % 4}",
            "watch",
            {"action": "start", "camera": CAMERAS[n % 3], "condition": "a fox on the lawn",
             "max_duration_minutes": 1},
        )  # fmt: skip

    async def sampler(self, stop: asyncio.Event, started: float) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WARMUP_S):
                await stop.wait()
        while True:
            rss, fds = sample(self.proc.pid)
            self.samples.append((round(loop.time() - started, 1), round(rss, 1), fds))
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAMPLE_EVERY_S):
                    await stop.wait()

    async def reader(self, queue: asyncio.Queue[Received]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.tally.take(await queue.get(), loop.time())

    async def run(self, keep_files: bool = False) -> dict[str, Any]:
        broker = Broker()
        broker.start()
        log_path = self.tmp / "lookout.log"
        try:
            async with (
                FakeLLM(responder=make_responder()) as fake,
                MqttTestClient(broker.host, broker.port) as client,
            ):
                self.client = client
                replies = await client.subscribe(f"{self.prefix}/+/reply/#")
                alerts = await client.subscribe(f"{self.prefix}/+/watch/+/alert")
                status = await client.subscribe(f"{self.prefix}/status")
                with log_path.open("ab") as log:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-m", "service", "run", "--config",
                         str(self._config(broker, fake))],
                        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )  # fmt: skip
                try:
                    while (await next_message(status, 30)).payload != b"online":
                        pass
                    result = await self._drive(replies, alerts)
                finally:
                    exit_code = self._stop()
        finally:
            broker.close()
        result["exit_code"] = exit_code
        result["error_log_lines"] = error_lines(log_path)
        result["log"] = str(log_path) if keep_files else None
        if not keep_files:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return result

    async def _drive(
        self, replies: asyncio.Queue[Received], alerts: asyncio.Queue[Received]
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = loop.time()
        async with asyncio.TaskGroup() as tg:
            readers = [
                tg.create_task(self.reader(replies), name="soak-replies"),
                tg.create_task(self.reader(alerts), name="soak-alerts"),
            ]
            load = [
                tg.create_task(self._every(period, action, stop), name=f"soak-{name}")
                for name, period, action in (
                    ("chat", 0.5, self.chat),
                    ("tool", 0.5, self.tool),
                    ("health", 1.0, self.health),
                    ("frames", 0.5, self.frames),
                    ("events", 1.0, self.events),
                    ("watch", 15.0, self.watch),
                )
            ]
            sampler = tg.create_task(self.sampler(stop, started), name="soak-sampler")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.seconds):
                    await stop.wait()
            stop.set()
            await asyncio.gather(*load, sampler)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await self.tally.all_answered.wait()
            for task in readers:
                task.cancel()
        return self._figures(loop.time() - started)

    def _stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def _figures(self, elapsed: float) -> dict[str, Any]:
        t = self.tally
        errors: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for kind, _ in t.sent.values():
            by_kind[kind] = by_kind.get(kind, 0) + 1
        for rid in t.sent:
            for reply in t.terminals.get(rid, [])[:1]:
                if reply["type"] == "error":
                    code = reply["error"]["code"]
                    errors[code] = errors.get(code, 0) + 1
        rss = [s[1] for s in self.samples]
        fds = [s[2] for s in self.samples]
        return {
            "seconds": round(elapsed, 1),
            "sent": len(t.sent),
            "answered": sum(1 for rid in t.sent if rid in t.terminals),
            "lost": t.outstanding(),
            "more_than_one_terminal": sum(1 for v in t.terminals.values() if len(v) > 1),
            "by_kind": by_kind,
            "errors": errors,
            "unexpected_errors": {k: v for k, v in errors.items() if k not in EXPECTED_ERRORS},
            "watch_alerts": t.alerts,
            "frames_sent": t.frames,
            "frigate_messages_sent": t.frigate_messages,
            "latency_ms": {kind: percentiles(v) for kind, v in sorted(t.latency_ms.items())},
            "rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss)} if rss else {},
            "fds": {"first": fds[0], "last": fds[-1], "max": max(fds)} if fds else {},
            "samples": self.samples,
        }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 (nearest rank) of ``values``."""
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def error_lines(log_path: Path) -> list[str]:
    """Log lines at level error (JSON lines), except events the injected faults explain."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                found.append(line)
            continue
        level = entry.get("level") if isinstance(entry, dict) else None
        if level in ("error", "critical") and entry.get("event") not in EXPECTED_ERROR_EVENTS:
            found.append(line[:500])
    return found


def run(seconds: float = 600.0, *, keep_files: bool = False) -> dict[str, Any]:
    """Run the soak for ``seconds`` and return its figures.

    ``keep_files`` keeps the worker's database and log (their path is in ``log``).
    """
    return asyncio.run(Soak(seconds).run(keep_files))


def render(result: dict[str, Any]) -> str:
    rss, fds = result["rss_mb"], result["fds"]
    lines = [
        f"soak: {result['seconds']} s, worker exit code {result['exit_code']}",
        f"requests sent {result['sent']}, answered {result['answered']}, "
        f"lost {result['lost']}, more than one terminal {result['more_than_one_terminal']}",
        f"by kind: {result['by_kind']}",
        f"errors: {result['errors']} (unexpected: {result['unexpected_errors']})",
        f"watch alerts {result['watch_alerts']}, frames {result['frames_sent']}, "
        f"Frigate messages {result['frigate_messages_sent']}",
        f"latency ms: {result['latency_ms']}",
        f"RSS MB first {rss.get('first')} last {rss.get('last')} max {rss.get('max')}",
        f"open fds first {fds.get('first')} last {fds.get('last')} max {fds.get('max')}",
        f"samples (s, RSS MB, fds): {result['samples']}",
        f"error log lines: {len(result['error_log_lines'])} (worker log: {result['log']})",
        *(f"  {line}" for line in result["error_log_lines"][:20]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(args.seconds, keep_files=True)
    print(json.dumps(figures, indent=2) if args.json else render(figures))
    ok = (
        figures["lost"] == 0
        and not figures["unexpected_errors"]
        and not figures["error_log_lines"]
        and figures["more_than_one_terminal"] == 0
    )
    sys.exit(0 if ok else 1)

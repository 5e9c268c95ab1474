"""What the benchmarks that run the real worker share: a broker, a fake LLM, the worker.

:class:`Stack` starts a mosquitto with the project's config (``tests.broker.Broker``),
optionally the fake OpenAI server as a process of its own (``python -m tests.fake_llm``,
so its CPU is not the benchmark's), and the real ``lookout run`` process
(``tests.conftest.Worker``), then waits for the retained ``online``. :class:`ChatClient`
sends chats over MQTT (QoS 1, TCP_NODELAY) and times every reply of each.

CPU and memory come from ``/proc/<pid>``: utime + stime, and VmRSS.

The fake LLM's responders for the chat benchmarks live here too, because the fake
process loads them by ``module:callable`` (``bench.harness:two_tool_rounds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fake_llm import RecordedRequest, Reply, slow_tokens, text, tool_calls  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# -- the fake model's answers ---------------------------------------------------------------

FINAL_ANSWER = "Nobody came to the front door this morning; the driveway saw one car at 08:12."
# Two rounds of a tool that costs next to nothing in lookout too (no database, no
# frame), so the figure is lookout's machinery; the reference's tools are trivial as well.
ROUND_ONE = ("get_profile_status", {})
ROUND_TWO = ("get_profile_status", {"detail": "again"})


def _tool_results_since_user(request: RecordedRequest) -> int:
    count = 0
    for message in reversed(request.messages):
        if message.get("role") == "user":
            break
        count += message.get("role") == "tool"
    return count


def two_tool_rounds() -> Any:
    """A responder: one tool call, then another, then a short answer (instantly)."""

    def respond(request: RecordedRequest) -> Reply:
        done = _tool_results_since_user(request)
        if request.tools and done == 0:
            return tool_calls([ROUND_ONE], usage=(900, 12))
        if request.tools and done == 1:
            return tool_calls([ROUND_TWO], usage=(960, 20))
        return text(FINAL_ANSWER, chunk_size=8, usage=(1020, 24))

    return respond


def token_stream(tokens: int = 100, interval_s: float = 0.02) -> Any:
    """A responder: ``tokens`` content chunks, ``interval_s`` apart (the first after one interval)."""

    def respond(_request: RecordedRequest) -> Reply:
        return slow_tokens(tokens, interval_s)

    return respond


def fast_answer() -> Any:
    """A responder: a short answer streamed in ten chunks, as fast as the server can."""

    def respond(_request: RecordedRequest) -> Reply:
        return text(FINAL_ANSWER, chunk_size=8)

    return respond


def colour_verdict() -> Any:
    """A responder for watch calls: "met" when the frame is mostly red (bench_cluster)."""
    from tests.e2e.test_watch import frame_colour, is_watch_call, verdict

    def respond(request: RecordedRequest) -> Reply:
        if not is_watch_call(request):
            return text("ok")
        if frame_colour(request) == "red":
            return verdict(True, "A red car stopped at the door.", "A red car is at your door.")
        return verdict(False, "Only the empty porch.")

    return respond


# -- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class CpuMeter:
    """CPU used by one process between :meth:`start` and :meth:`stop`, as a share of a core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = self._wall = 0.0
        self.cores = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        self._cpu, self._wall = cpu_seconds(self.pid), time.perf_counter()

    def stop(self) -> float:
        self.cpu_s = cpu_seconds(self.pid) - self._cpu
        self.wall_s = time.perf_counter() - self._wall
        self.cores = self.cpu_s / self.wall_s
        return self.cores


# -- processes -------------------------------------------------------------------------------


class FakeLLMProcess:
    """``python -m tests.fake_llm`` in a process of its own, controlled over HTTP."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def start(self, timeout: float = 20.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fake_llm", "--port", "0",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not self.url:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the fake LLM exited before it listened")
                if line.startswith("FAKE_LLM_URL="):
                    self.url = line.strip().split("=", 1)[1]

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, json=body) as r,
        ):
            r.raise_for_status()
            return await r.json()

    async def set_responder(self, factory: str, args: dict[str, Any] | None = None) -> None:
        """Answer every request with ``bench.harness:<factory>(**args)``."""
        await self._post("/_responder", {"path": f"bench.harness:{factory}", "args": args or {}})

    async def reset(self) -> None:
        """Forget recorded requests (they would pile up over thousands of chats)."""
        await self._post("/_reset", {})

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class StackConfig:
    """How the worker is configured for a benchmark."""

    llm: bool = True
    max_concurrent: int = 256
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    """Broker + (fake LLM) + the real worker + a test client, as an async context manager.

    Attributes:
        startup_s: Seconds from starting the worker process to its retained ``online``.
    """

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
        self.llm: FakeLLMProcess | None = None
        self.startup_s = float("nan")
        self._stack = contextlib.AsyncExitStack()

    @property
    def pid(self) -> int:
        assert self.worker.proc is not None
        return self.worker.proc.pid

    async def __aenter__(self) -> Stack:
        from tests.broker import Broker
        from tests.conftest import Worker
        from tests.mqttc import MqttTestClient

        try:
            self.broker = Broker()
            self.broker.start()
            self._stack.callback(self.broker.close)
            cfg: dict[str, Any] = {
                # The chat benchmarks run hundreds of requests a minute from few callers.
                "limits": {"requests_per_minute": 0},
                "chat": {"max_concurrent": self.config.max_concurrent},
                "log": {"level": self.config.log_level, "format": "json"},
                "frigate": {"topic_prefix": f"{self.prefix}fr"},
            }
            if self.config.llm:
                self.llm = FakeLLMProcess()
                self._stack.push_async_callback(self.llm.close)
                await self.llm.start()
                cfg["llm"] = {
                    "providers": {
                        "fake": {
                            "base_url": self.llm.base_url,
                            "api_key": "sk-bench",
                            "model": "fake-model",
                            "max_retries": 0,
                            "timeout_s": 30,
                        }
                    }
                }
            for key, value in self.config.extra.items():
                cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
            self.client = await self._stack.enter_async_context(
                MqttTestClient(self.broker.host, self.broker.port)
            )
            self.worker = Worker(
                self.broker, self.workdir, self.prefix, config=cfg, env=self.config.env
            )
            self._stack.callback(self.worker.stop)
            status = await self.client.subscribe(f"{self.prefix}/status")
            started = time.perf_counter()
            self.worker.start()
            async with asyncio.timeout(30):
                while (await status.get()).payload != b"online":
                    pass
            self.startup_s = time.perf_counter() - started
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


# -- chats over MQTT --------------------------------------------------------------------------


@dataclass
class ChatRun:
    """The replies of one chat, with their arrival times (``perf_counter`` seconds)."""

    id: str
    sent_at: float = 0.0
    first_content_at: float | None = None
    done_at: float | None = None
    messages: int = 0
    types: list[str] = field(default_factory=list)
    terminal: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total_ms(self) -> float:
        assert self.done_at is not None
        return (self.done_at - self.sent_at) * 1000

    @property
    def first_content_ms(self) -> float | None:
        if self.first_content_at is None:
            return None
        return (self.first_content_at - self.sent_at) * 1000

    @property
    def answered(self) -> bool:
        return self.terminal is not None and self.terminal.get("type") == "done"


class ChatClient:
    """Sends chats to the worker and routes every reply to its :class:`ChatRun` by id."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._runs: dict[str, ChatRun] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChatClient:
        queue = await self.stack.client.subscribe(f"{self.stack.prefix}/+/reply/+")
        self._reader = asyncio.create_task(self._read(queue), name="bench-chat-replies")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            msg = await queue.get()
            now = time.perf_counter()
            body = json.loads(msg.payload)
            run = self._runs.get(body.get("id"))
            if run is None:
                continue
            run.messages += 1
            kind = body.get("type")
            run.types.append(kind)
            if kind == "content" and run.first_content_at is None:
                run.first_content_at = now
            elif kind == "stats":
                run.stats = body
            if kind in ("done", "error"):
                run.done_at, run.terminal = now, body
                self._runs.pop(run.id, None)
                run.finished.set()

    async def chat(self, user: str, body: dict[str, Any], timeout: float = 60.0) -> ChatRun:
        """Publish one chat request and wait for its terminal reply."""
        run = ChatRun(id=uuid.uuid4().hex[:16])
        self._runs[run.id] = run
        run.sent_at = time.perf_counter()
        await self.stack.client.publish(f"{self.stack.prefix}/{user}/chat", {"id": run.id, **body})
        try:
            async with asyncio.timeout(timeout):
                await run.finished.wait()
        finally:
            self._runs.pop(run.id, None)
        return run

"""Shared by the command-line, one-liner and example tests: a worker with the fake LLM,
Frigate's replayed session, and running a command without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.broker import REPO
from tests.fake_llm import FakeLLM
from tests.frigate_replay import build_session
from tests.mqttc import MqttTestClient, request


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def run(*argv: str, env: dict[str, str] | None = None, limit: float = 60.0) -> Run:
    """Run a program to its end in a subprocess; fail the test if it outlives ``limit``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"`{' '.join(argv)}` still running after {limit} s")
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def lookout(*args: str, limit: float = 60.0) -> Run:
    """The `lookout` command (``python -m service``), without any LOOKOUT_* environment."""
    return await run(sys.executable, "-m", "service", *args, limit=limit)


@dataclass
class Lookout:
    prefix: str
    frigate_prefix: str
    config: str
    fake: FakeLLM
    worker: Any

    async def cli(self, *args: str, user: str = "alice") -> Run:
        return await lookout(*args, "--config", self.config, "--user", user)


@contextlib.asynccontextmanager
async def lookout_with_fake_llm(
    broker: Any,
    worker_factory: Any,
    mqtt: MqttTestClient,
    *,
    llm_timeout_s: float = 5,
    **config: Any,
) -> AsyncIterator[Lookout]:
    """The real `lookout run` on a prefix of its own, its model server the fake LLM."""
    async with FakeLLM() as fake:
        prefix = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{prefix}fr"
        provider = {"base_url": fake.base_url, "api_key": "sk-e2e-test", "model": "fake-model",
                    "max_retries": 0, "timeout_s": llm_timeout_s}  # fmt: skip
        cfg = {"llm": {"providers": {"fake": provider}}, "frigate": {"topic_prefix": fp}, **config}
        worker = worker_factory(broker, prefix=prefix, config=cfg)
        worker.start()
        await worker.wait_online(mqtt)
        yield Lookout(prefix, fp, str(worker.config_path), fake, worker)


async def replay_frigate(mqtt: MqttTestClient, env: Lookout, stored: int = 3) -> None:
    """Frigate's cameras and events, then wait (on health replies) until the store has them."""
    for topic, payload, retain in build_session(time.time() - 600, env.frigate_prefix).messages:
        await mqtt.publish(topic, payload, qos=1, retain=retain)
    async with asyncio.timeout(20):
        while True:
            store = (await request(mqtt, env.prefix, "probe", "health", {}))[-1]["store"]
            if store.get("rows_written", 0) >= stored and store.get("pending", 1) == 0:
                return
            await asyncio.sleep(0.1)  # re-ask cadence, not synchronisation


async def tool(mqtt: MqttTestClient, prefix: str, name: str, **arguments: Any) -> dict[str, Any]:
    """Run one tool as ``admin`` through a `tool` request; its result (the reply must be done)."""
    out = await request(mqtt, prefix, "admin", "tool", {"tool_name": name, "arguments": arguments})
    assert out[-1]["type"] == "done", out[-1]
    return dict(out[-1]["result"])


async def health(mqtt: MqttTestClient, prefix: str) -> dict[str, Any]:
    """lookout's `health` reply."""
    return (await request(mqtt, prefix, "probe", "health", {}))[-1]

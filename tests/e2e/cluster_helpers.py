"""Several `lookout run` workers on one mosquitto and one private PostgreSQL database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import Worker
from tests.fake_llm import FakeLLM
from tests.mqttc import MqttTestClient, next_message, request
from tests.pg import fresh_database


def provider(fake: FakeLLM) -> dict[str, Any]:
    return {
        "providers": {
            "fake": {
                "base_url": fake.base_url,
                "model": "fake-model",
                "max_retries": 0,
                "timeout_s": 30,
            }
        }
    }


@dataclass
class Cluster:
    """Workers that share a prefix, a broker and a database."""

    prefix: str
    frigate_prefix: str
    db_url: str
    config: dict[str, Any]
    workers: dict[str, Worker] = field(default_factory=dict)

    def worker(self, name: str) -> Worker:
        return self.workers[name]

    def status_topic(self, name: str) -> str:
        return f"{self.prefix}/worker/{name}/status"


def make_cluster(
    factory: Any,
    broker: Any,
    tmp_path: Path,
    fake: FakeLLM,
    names: list[str],
    *,
    takeover_s: float = 6.0,
    **extra: Any,
) -> Cluster:
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    fp = f"{prefix}fr"
    db_url = fresh_database()
    cluster = Cluster(prefix, fp, db_url, {})
    for name in names:
        config: dict[str, Any] = {
            "llm": provider(fake),
            "frigate": {"topic_prefix": fp},
            "store": {"url": db_url},
            "cluster": {"enabled": True, "worker_name": name, "takeover_s": takeover_s},
            "log": {"level": "info", "format": "json"},
            # A hundred chats per client in a few seconds is the load under test.
            "limits": {"requests_per_minute": 0},
            "chat": {"max_concurrent": 300},
        }
        for key, value in extra.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        cluster.workers[name] = factory(
            broker, prefix=prefix, workdir=tmp_path / name, config=config
        )
    return cluster


async def wait_worker_online(mqtt: MqttTestClient, cluster: Cluster, name: str) -> None:
    queue = await mqtt.subscribe(cluster.status_topic(name))
    async with asyncio.timeout(30):
        while (await next_message(queue, 30)).payload != b"online":
            pass


async def start_all(mqtt: MqttTestClient, cluster: Cluster, names: list[str] | None = None) -> None:
    for name in names or list(cluster.workers):
        cluster.workers[name].start()
    for name in names or list(cluster.workers):
        await wait_worker_online(mqtt, cluster, name)


async def health(mqtt: MqttTestClient, cluster: Cluster) -> dict[str, Any]:
    return (await request(mqtt, cluster.prefix, "probe", "health", {}))[-1]


async def until_health(mqtt: MqttTestClient, cluster: Cluster, check: Any, timeout: float = 30):
    """Ask `health` until ``check(cluster_section)`` holds; the section that passed."""
    async with asyncio.timeout(timeout):
        while True:
            section = (await health(mqtt, cluster)).get("cluster", {})
            if check(section):
                return section
            await asyncio.sleep(0.2)  # re-ask cadence, not synchronisation


def sql(db_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one query on the cluster's database (from a thread: tests run in a loop)."""
    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db_url)
        try:
            return [tuple(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=30)

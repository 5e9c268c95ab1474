"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.broker import REPO, Broker, ExternalBroker, start_shared_broker, stop_process
from tests.mqttc import MqttTestClient, next_message
from tests.pg import fresh_database

HOMEASSISTANT_TIER = "tests/peers/homeassistant/"


LLAMACPP_TIER = "tests/peers/llamacpp/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``scripts/test`` runs ``-n``), a test file runs whole on one
    process, in its own order, and the Home Assistant tier runs whole on one process:
    it shares one Home Assistant, and its last test reads the log of all the others.

    The longest work goes out first, so that it does not end the run alone: the Home
    Assistant tier (minutes of waiting on Home Assistant and on a watch that must time
    out), then the files that start workers, then the llama.cpp tier (on a fresh machine
    the server it needs is built meanwhile), then the unit tests, which fill the gaps.
    """
    from xdist.scheduler import LoadScopeScheduling

    def rank(scope: str) -> int:
        if scope == HOMEASSISTANT_TIER:
            return 0
        if scope.startswith(("tests/e2e/", "tests/integration/")):
            return 1
        return 2 if scope.startswith(LLAMACPP_TIER) else 3

    class FilesAndTiers(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return HOMEASSISTANT_TIER if path.startswith(HOMEASSISTANT_TIER) else path

        def _assign_work_unit(self, node: Any) -> None:
            first = min(self.workqueue, key=rank)  # the first of the lowest rank
            self.workqueue.move_to_end(first, last=False)
            super()._assign_work_unit(node)

    return FilesAndTiers(config, log)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker | ExternalBroker]:
    """One broker for the session; tests isolate themselves with unique topic prefixes."""
    b = start_shared_broker()
    yield b
    b.close()


@pytest.fixture
def private_broker() -> Iterator[Broker]:
    """A broker of this test's own, which the test may stop, kill and restart."""
    b = Broker()
    b.start()
    yield b
    b.close()


@pytest.fixture
def prefix() -> str:
    return f"lk{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def mqtt(broker: Broker | ExternalBroker) -> AsyncIterator[MqttTestClient]:
    async with MqttTestClient(broker.host, broker.port) as client:
        yield client


_WORKDIR_DATABASES: dict[Path, str] = {}
"""LOOKOUT_TEST_STORE=postgres: each work directory's database."""


class Worker:
    """The real `lookout run` process, configured through a YAML file and the environment."""

    def __init__(
        self,
        broker: Broker | ExternalBroker,
        workdir: Path,
        prefix: str,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.prefix = prefix
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

        def store_url() -> str:
            # LOOKOUT_TEST_STORE=postgres runs the suite on PostgreSQL: a database of the
            # session's private cluster per work directory (see tests/pg.py), so that a
            # worker restarted in the same directory finds its data, as with SQLite.
            if os.environ.get("LOOKOUT_TEST_STORE") == "postgres" and not (config or {}).get(
                "store", {}
            ).get("url"):
                key = workdir.resolve()
                if key not in _WORKDIR_DATABASES:
                    _WORKDIR_DATABASES[key] = fresh_database()
                return _WORKDIR_DATABASES[key]
            return f"sqlite:///{workdir / 'lookout.db'}"

        self.config_path = workdir / "lookout.yml"
        cfg: dict[str, Any] = {
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": prefix,
                "client_id": f"lookout-{prefix}",
                "reconnect_max_s": 2.0,
            },
            "store": {"url": store_url()},
            "log": {"level": "debug", "format": "json"},
        }
        for key, value in (config or {}).items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("LOOKOUT_CONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "lookout.log"
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--config", str(self.config_path)],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_online(self, client: MqttTestClient, timeout: float = 20.0) -> None:
        queue = await client.subscribe(f"{self.prefix}/status")
        async with asyncio.timeout(timeout):
            while True:
                msg = await next_message(queue, timeout)
                if msg.payload == b"online":
                    return

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def worker_factory(tmp_path: Path, prefix: str) -> Iterator[Any]:
    workers: list[Worker] = []

    def make(broker: Broker | ExternalBroker, **kwargs: Any) -> Worker:
        workdir = kwargs.pop("workdir", tmp_path)
        w = Worker(broker, workdir, kwargs.pop("prefix", prefix), **kwargs)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()

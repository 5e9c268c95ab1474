"""A real mosquitto for tests and benchmarks, started with the project's own config.

Order of preference: ``LOOKOUT_TEST_MQTT_URL`` (a broker someone else runs), then the
``mosquitto`` binary on a free loopback port, then testcontainers where a Docker engine
answers. If none works the caller fails loudly: a test never skips for want of a broker.
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
CONF_D = REPO / "mosquitto" / "conf.d"


_PORT_WINDOW = 1500
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, for a server that is started a little later.

    A port the kernel picks (bind to 0) comes from its ephemeral range, which outgoing
    connections draw from too: in the seconds before Home Assistant or PostgreSQL binds
    the port, a connection of another test process may take it. So the port comes from
    below that range, from a window of this process's own (one per pytest-xdist worker),
    and is never handed out twice by one process.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = 20000 + (index % 8) * _PORT_WINDOW
    if low + _PORT_WINDOW > _ephemeral_low():  # an unusual range: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    candidates = [p for p in range(low, low + _PORT_WINDOW) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}..{low + _PORT_WINDOW - 1}")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM a process still running and wait for it; kill it if it takes too long."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class BrokerUnavailableError(RuntimeError):
    pass


class Broker:
    """A mosquitto process on 127.0.0.1 that a test may stop, kill and restart."""

    def __init__(
        self,
        port: int | None = None,
        extra_conf: str = "",
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.password_file = password_file
        self.acl_file = acl_file
        self._dir = Path(tempfile.mkdtemp(prefix="lookout-mosq-"))
        self.conf = self._dir / "mosquitto.conf"
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_conf(self) -> None:
        (self._dir / "data").mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            f"password_file {self.password_file}" if self.password_file else "",
            f"acl_file {self.acl_file}" if self.acl_file else "",
            f"persistence_location {self._dir / 'data'}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            # mosquitto drops root privileges to 'mosquitto', who could not write our temp dir.
            f"user {getpass.getuser()}",
            self.extra_conf,
            f"include_dir {CONF_D}",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            raise BrokerUnavailableError("the mosquitto binary is not installed")
        self._write_conf()
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()

        def pump(stream: object) -> None:
            for line in stream:  # type: ignore[attr-defined]
                self.log.append(line.rstrip())
                if " running" in line or "Opening ipv4 listen socket" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc.stderr,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise BrokerUnavailableError("mosquitto did not start:\n" + "\n".join(self.log))
        # The log line comes just before listen(); confirm the port answers.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.01)
        raise BrokerUnavailableError("mosquitto started but its port never answered")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): persistence is written, clients see a disconnect."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class ExternalBroker:
    """A broker given by ``LOOKOUT_TEST_MQTT_URL``; it cannot be stopped by tests."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.url = url

    def close(self) -> None:
        pass


def start_shared_broker() -> Broker | ExternalBroker:
    """The broker most tests share (one per test session)."""
    url = os.environ.get("LOOKOUT_TEST_MQTT_URL")
    if url:
        return ExternalBroker(url)
    try:
        broker = Broker()
        broker.start()
    except BrokerUnavailableError as first:
        container = _testcontainers_broker()
        if container is None:
            raise BrokerUnavailableError(
                f"no MQTT broker for the tests: {first}; install mosquitto "
                "(apt-get install mosquitto) or set LOOKOUT_TEST_MQTT_URL"
            ) from None
        return container
    return broker


def _testcontainers_broker() -> ExternalBroker | None:
    try:
        import docker  # type: ignore[import-not-found]
        from testcontainers.core.container import (  # type: ignore[import-not-found]
            DockerContainer,
        )

        docker.from_env().ping()
    except Exception:
        return None
    container = DockerContainer("eclipse-mosquitto:2").with_exposed_ports(1883)
    container.with_volume_mapping(str(REPO / "mosquitto"), "/mosquitto/config", "ro")
    container.start()
    port = container.get_exposed_port(1883)
    return ExternalBroker(f"mqtt://{container.get_container_host_ip()}:{port}")

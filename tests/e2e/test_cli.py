"""The `lookout` command line against a real worker and a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from service import __version__
from tests.broker import REPO, Broker

pytestmark = pytest.mark.e2e


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def lookout(*args: str, limit: float = 30.0) -> Result:
    """Run ``python -m service ARGS`` without blocking the loop; fail if it outlives ``limit``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"`lookout {' '.join(args)}` still running after {limit} s")
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def write_config(path: Path, broker, prefix: str) -> Path:
    path.write_text(
        yaml.safe_dump({"mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": prefix}})
    )
    return path


async def test_health_of_a_running_worker_prints_its_version(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    asked = await mqtt.subscribe(f"{worker.prefix}/probe/health")
    result = await lookout("health", "--config", str(worker.config_path), "--user", "probe")
    assert result.code == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    expected = rf"lookout {re.escape(__version__)} up \d+ s, broker connected=True connects=1"
    assert re.fullmatch(expected, line), line
    request = await asyncio.wait_for(asked.get(), 5)
    assert request.topic == f"{worker.prefix}/probe/health"
    assert "Traceback" not in result.stderr


async def test_health_json_prints_the_reply_and_nothing_else(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    result = await lookout("health", "--config", str(worker.config_path), "--json")
    assert result.code == 0, result.stderr
    reply = json.loads(result.stdout)  # stdout is the reply alone, ready for jq
    assert reply["type"] == "done" and reply["seq"] == 0
    assert reply["version"] == __version__
    assert reply["broker"]["connected"] is True
    assert reply["requests"]["by_kind"]["health"] >= 1


async def test_health_with_no_worker_exits_1_within_its_timeout(broker, tmp_path):
    nobody = f"lk{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "nobody.yml", broker, nobody)
    # It takes about 1.5 s in all; the limit is below the 10 s default, so a --timeout
    # that was ignored would fail here.
    result = await lookout("health", "--config", str(cfg), "--timeout", "1", limit=8)
    assert result.code == 1
    assert result.stdout == ""
    assert "no reply from lookout" in result.stderr
    assert nobody in result.stderr  # says which prefix it asked
    assert "Traceback" not in result.stderr


async def test_host_and_port_flags_override_the_file(broker, worker_factory, mqtt, tmp_path):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    wrong = yaml.safe_load(worker.config_path.read_text())
    wrong["mqtt"]["host"], wrong["mqtt"]["port"] = "192.0.2.1", 9
    cfg = tmp_path / "wrong-broker.yml"
    cfg.write_text(yaml.safe_dump(wrong))
    result = await lookout(
        "health", "--config", str(cfg), "--host", broker.host, "--port", str(broker.port)
    )
    assert result.code == 0, result.stderr


async def test_check_config_on_a_good_file_exits_0(broker, tmp_path):
    cfg = write_config(tmp_path / "good.yml", broker, "lookout")
    result = await lookout("check-config", "--config", str(cfg))
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"configuration OK (broker {broker.host}:{broker.port})"
    assert result.stderr == ""


async def test_health_with_a_refused_password_exits_3_without_a_traceback(tmp_path):
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd (package mosquitto) is required"
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwd), "probe", "right-pw"], check=True)
    passwd.chmod(0o600)
    broker = Broker(password_file=passwd)
    broker.start()
    try:
        cfg = tmp_path / "wrong-pw.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {
                        "host": broker.host,
                        "port": broker.port,
                        "username": "probe",
                        "password": "wrong-pw-s3cret",
                    }
                }
            )
        )
        result = await lookout("health", "--config", str(cfg), "--timeout", "20")
    finally:
        broker.close()
    assert result.code == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "refused the credentials" in result.stderr
    assert "wrong-pw-s3cret" not in result.stderr + result.stdout

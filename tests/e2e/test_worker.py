"""The real `lookout run` process against a real mosquitto: availability, restarts, replies."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
import pytest

from tests.broker import REPO, Broker
from tests.mqttc import MqttTestClient, next_message, request, until_terminal

pytestmark = pytest.mark.e2e


async def test_online_retained_then_sigterm_publishes_offline(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    # The README's check, verbatim: a fresh subscriber gets the retained status.
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-t",
            f"{worker.prefix}/status",
            "-C",
            "1",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout.strip() == "online"

    status = await mqtt.subscribe(f"{worker.prefix}/status")
    assert (await next_message(status)).payload == b"online"  # retained copy
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert (await next_message(status, timeout=5)).payload == b"offline"
    assert await asyncio.to_thread(worker.wait, 5) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in worker.log_text()


async def test_kill_9_leaves_the_will(broker, worker_factory, mqtt):
    worker = worker_factory(broker, config={"mqtt": {"keepalive_s": 5}})
    worker.start()
    await worker.wait_online(mqtt)
    status = await mqtt.subscribe(f"{worker.prefix}/status")
    assert (await next_message(status)).payload == b"online"
    worker.kill()  # SIGKILL: the socket closes without DISCONNECT, the broker sends the will
    assert (await next_message(status, timeout=10)).payload == b"offline"


async def test_broker_restart_reconnects_and_resubscribes(private_broker: Broker, worker_factory):
    worker = worker_factory(private_broker, config={"mqtt": {"reconnect_max_s": 5.0}})
    worker.start()
    async with MqttTestClient(private_broker.host, private_broker.port) as c:
        await worker.wait_online(c)
    private_broker.stop()
    await asyncio.sleep(10)  # the outage the issue asks about; nothing to wait on
    private_broker.start()
    back = time.monotonic()
    async with MqttTestClient(private_broker.host, private_broker.port) as c:
        await worker.wait_online(c, timeout=15)
        assert time.monotonic() - back < 5.5
        replies = await request(c, worker.prefix, "alice", "health", {})
    assert replies[-1]["type"] == "done"
    assert replies[-1]["broker"]["connects"] == 2


async def test_request_published_while_down_is_answered_once(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 5) == 0

    rid = uuid.uuid4().hex[:12]
    replies = await mqtt.subscribe(f"{worker.prefix}/bob/reply/+")
    await mqtt.publish(f"{worker.prefix}/bob/health", {"id": rid}, qos=1)
    # The same request again, as a QoS 1 redelivery would bring it.
    await mqtt.publish(f"{worker.prefix}/bob/health", {"id": rid}, qos=1)
    worker.start()
    first = await until_terminal(replies, rid, timeout=20)
    assert first[-1]["type"] == "done"
    # A later request proves the queue drained; nothing else for rid may have arrived.
    probe = uuid.uuid4().hex[:12]
    await mqtt.publish(f"{worker.prefix}/bob/health", {"id": probe}, qos=1)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:
            body = (await replies.get()).json()
            seen.append(body)
            if body["id"] == probe and body["type"] == "done":
                break
    assert [b for b in seen if b["id"] == rid] == []


async def test_health_on_all_three_reply_routes(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    p = worker.prefix

    # 1. MQTT 5 Response Topic + Correlation Data, as mosquitto_rr sends them.
    out = await asyncio.to_thread(
        subprocess.run,
        [
            "mosquitto_rr",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            f"{p}/carol/health",
            "-e",
            f"{p}/carol/rr",
            "-m",
            "{}",
            "-W",
            "10",
            "-D",
            "publish",
            "correlation-data",
            "abc123",
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["type"] == "done" and body["seq"] == 0 and body["version"]

    # The same through our own v5 client, checking the echoed correlation data.
    rt = f"{p}/carol/replies-v5"
    q5 = await mqtt.subscribe(rt)
    await mqtt.publish(
        f"{p}/carol/health", {"id": "v5req"}, response_topic=rt, correlation_data=b"\x00corr"
    )
    msg = await next_message(q5)
    assert msg.correlation_data == b"\x00corr"
    assert msg.json()["id"] == "v5req"

    # 2. Home Assistant style: MQTT 3.1.1, no properties, `reply_to` in the payload.
    got: list[bytes] = []
    arrived = threading.Event()
    ha = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"ha-{p}", protocol=paho.MQTTv311)
    ha.on_message = lambda _c, _u, m: (got.append(m.payload), arrived.set())
    ha.connect(broker.host, broker.port)
    ha.loop_start()
    try:
        sub_done = threading.Event()
        ha.on_subscribe = lambda *_a: sub_done.set()
        ha.subscribe(f"{p}/ha/answers", qos=1)
        assert await asyncio.to_thread(sub_done.wait, 5)
        ha.publish(
            f"{p}/ha/health", json.dumps({"id": "ha1", "reply_to": f"{p}/ha/answers"}), qos=1
        )
        assert await asyncio.to_thread(arrived.wait, 10)
    finally:
        ha.loop_stop()
        ha.disconnect()
    assert json.loads(got[0])["id"] == "ha1"

    # 3. No route given: the default reply topic.
    replies = await request(mqtt, p, "dave", "health", {"id": "dflt"})
    assert (
        replies == [replies[-1]] and replies[-1]["type"] == "done" and replies[-1]["id"] == "dflt"
    )


async def test_bad_requests_get_one_error_reply_and_the_worker_lives(broker, worker_factory, mqtt):
    worker = worker_factory(broker)
    worker.start()
    await worker.wait_online(mqtt)
    p = worker.prefix
    anything = await mqtt.subscribe(f"{p}/eve/reply/+")
    await mqtt.publish(f"{p}/eve/health", b"\xff not json")
    await mqtt.publish(f"{p}/eve/health", {"id": "x1", "bogus": 1})
    await mqtt.publish(f"{p}/eve/health", {"id": "bad id with spaces"})
    errors = [(await next_message(anything)).json() for _ in range(3)]
    assert all(e["type"] == "error" and e["error"]["code"] == "invalid_request" for e in errors)
    by_id = {e["id"]: e for e in errors}
    assert "bogus" in by_id["x1"]["error"]["message"]
    replies = await request(mqtt, p, "eve", "health", {})
    assert replies[-1]["type"] == "done"


def test_bad_config_lists_every_problem_without_traceback(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "mqtt:\n  port: 99999\n  protocol: 7\n  colour: blue\nlog:\n  level: loud\nllm:\n  providers:\n    x: {base_url: 'http://h'}\n"
    )
    for command in ("check-config", "run"):
        out = subprocess.run(
            [sys.executable, "-m", "service", command, "--config", str(bad)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )
        assert out.returncode == 2
        err = out.stderr
        for key in (
            "mqtt.port",
            "mqtt.protocol",
            "mqtt.colour: unknown key",
            "log.level",
            "llm.providers.x.model: required",
        ):
            assert key in err, err
        assert "Traceback" not in err


async def test_reply_to_cannot_aim_at_frigate_or_another_user(broker, worker_factory, mqtt):
    worker = worker_factory(broker, config={"limits": {"requests_per_minute": 5}})
    worker.start()
    await worker.wait_online(mqtt)
    p = worker.prefix
    mine = await mqtt.subscribe(f"{p}/eve/reply/+")
    spy = await mqtt.subscribe("frigate/front/detect/set")
    await mqtt.publish(f"{p}/eve/health", {"id": "aim1", "reply_to": "frigate/front/detect/set"})
    err = (await next_message(mine)).json()
    assert err["id"] == "aim1"
    assert err["error"]["code"] == "invalid_request"
    assert "frigate/front/detect/set" in err["error"]["message"]
    # The rate limit: 5 a minute, burst included (aim1 was refused before it counted).
    replies = []
    for n in range(6):
        await mqtt.publish(f"{p}/eve/health", {"id": f"r{n}"})
        replies.append((await next_message(mine)).json())
    assert [r["type"] for r in replies] == ["done"] * 5 + ["error"]
    assert replies[-1]["error"]["code"] == "rate_limited"
    assert "limits.requests_per_minute" in replies[-1]["error"]["message"]
    assert spy.empty()

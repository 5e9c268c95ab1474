"""Several workers as one service: mosquitto, a private PostgreSQL and real `lookout run`s.

Each test gets a fresh database on the session's private PostgreSQL cluster (tests/pg.py)
and workers with fixed names, so it can tell who did what.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from typing import Any

import pytest

from tests.e2e.cluster_helpers import (
    Cluster,
    health,
    make_cluster,
    sql,
    start_all,
    until_health,
)
from tests.e2e.test_watch import BLUE, RED, ColourModel, car_arrives, frame
from tests.fake_llm import FakeLLM, RecordedRequest, Reply, slow_tokens, text
from tests.mqttc import MqttTestClient, Received, next_message, request

pytestmark = pytest.mark.e2e


async def chats(
    mqtt_clients: list[MqttTestClient],
    cluster: Cluster,
    n: int,
    *,
    on_answered: Any = None,
    pace_s: float = 0.0,
) -> dict[str, list[dict[str, Any]]]:
    """``n`` chats, spread over the clients (one user each); every reply of each, by id."""
    p = cluster.prefix
    replies: dict[str, list[dict[str, Any]]] = {}
    terminal: Counter[str] = Counter()
    done = asyncio.Event()
    queues = []
    for index, client in enumerate(mqtt_clients):
        queues.append(await client.subscribe(f"{p}/user{index}/reply/+"))

    async def read(queue: asyncio.Queue[Received]) -> None:
        while True:
            body = (await queue.get()).json()
            replies.setdefault(body["id"], []).append(body)
            if body["type"] in ("done", "error"):
                terminal[body["id"]] += 1
                if on_answered is not None:
                    on_answered(len(terminal))
                if len(terminal) >= n:
                    done.set()

    readers = [asyncio.create_task(read(q)) for q in queues]
    try:
        for i in range(n):
            index = i % len(mqtt_clients)
            rid = f"c{i:04d}"
            body = {"id": rid, "text": f"question {i}", "stream": True}
            await mqtt_clients[index].publish(f"{p}/user{index}/chat", body, qos=1)
            if pace_s:
                await asyncio.sleep(pace_s)  # the load's pace, not a synchronisation
        async with asyncio.timeout(120):
            await done.wait()
        # A second terminal reply would arrive right behind the first: look once more.
        probe = await request(mqtt_clients[0], p, "probe", "health", {})
        assert probe[-1]["type"] == "done"
    finally:
        for reader in readers:
            reader.cancel()
    assert sorted(terminal) == [f"c{i:04d}" for i in range(n)]
    for rid, count in terminal.items():
        if count > 1:
            # Only a QoS 1 copy of the one terminal reply (the worker died between
            # publishing it and journaling that it did; the taker sent the journaled copy).
            copies = [m for m in replies[rid] if m["type"] in ("done", "error")]
            assert all(c == copies[0] for c in copies), copies
    return replies


def drained(queue: asyncio.Queue[Received]) -> set[bytes]:
    """The payloads waiting in ``queue`` (a worker's second connection may say `online`
    again after the test subscribed: only an `offline` would be news)."""
    seen = set()
    while not queue.empty():
        seen.add(queue.get_nowait().payload)
    return seen


def final(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """The terminal reply of the last attempt."""
    return replies[-1]


@pytest.fixture
async def clients(broker) -> Any:
    opened = [MqttTestClient(broker.host, broker.port) for _ in range(3)]
    for client in opened:
        await client.__aenter__()
    yield opened
    for client in opened:
        await client.__aexit__(None, None, None)


async def test_300_chats_from_three_clients_are_spread_and_each_answered_once(
    broker, worker_factory, mqtt, clients, tmp_path
):
    async with FakeLLM(responder=lambda _r: text("an answer", chunk_size=3)) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2", "w3"])
        await start_all(mqtt, cluster)
        replies = await chats(clients, cluster, 300)
        assert [final(r) for r in replies.values() if final(r)["type"] != "done"] == []
        assert all("attempt" not in m for r in replies.values() for m in r)
        rows = sql(
            cluster.db_url,
            "SELECT worker_id, count(*) FROM requests WHERE kind='chat' GROUP BY worker_id",
        )
        by_worker = dict(rows)
        assert len(by_worker) == 3 and min(by_worker.values()) >= 50, by_worker
        section = await until_health(mqtt, cluster, lambda c: len(c.get("workers", [])) == 3)
        assert sorted(w["name"] for w in section["workers"]) == ["w1", "w2", "w3"]
        assert section["history_writer"] in ("w1", "w2", "w3")


async def test_sigkill_of_a_worker_mid_load_loses_and_repeats_no_request(
    broker, worker_factory, mqtt, clients, tmp_path
):
    # Every answer waits behind a gate until w2 is dead: whatever the machine's load, w2
    # then holds its share of the chats in flight. (A kill timed by the answers the test
    # had read came too late on a loaded machine: w2 had already finished all of its.)
    gate = asyncio.Event()

    async def held(_request: RecordedRequest) -> Reply:
        await gate.wait()
        return slow_tokens(5, 0.02)

    async with FakeLLM(responder=held) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2", "w3"])
        await start_all(mqtt, cluster)
        load = asyncio.create_task(chats(clients, cluster, 300, pace_s=0.01))
        try:
            await fake.wait_for_requests(150, timeout=60)
            running = {
                rid
                for (rid,) in sql(
                    cluster.db_url,
                    "SELECT r.id FROM requests r JOIN workers w ON w.id = r.worker_id "
                    "WHERE w.name = 'w2' AND r.finished_at IS NULL",
                )
            }
            assert running, "w2 runs a third of the chats: some are in flight"
            cluster.worker("w2").kill()
            gate.set()
            replies = await load
        finally:
            gate.set()
            load.cancel()
        assert all(final(r)["type"] == "done" for r in replies.values()), [
            final(r) for r in replies.values() if final(r)["type"] != "done"
        ]
        rerun = {rid for rid, r in replies.items() if final(r).get("attempt", 1) > 1}
        # Each chat w2 was running was run again by another worker, and said so.
        assert running <= rerun, sorted(running - rerun)
        for rid in rerun:
            # A re-run says so on every reply and starts its seq at 0 again.
            last = [m for m in replies[rid] if m.get("attempt") == final(replies[rid])["attempt"]]
            assert [m["seq"] for m in last] == list(range(len(last)))
        log = cluster.worker("w1").log_text() + cluster.worker("w3").log_text()
        assert '"requests_taken_over"' in log and '"session_swept"' in log


async def test_a_watch_whose_worker_is_killed_alerts_from_another(
    broker, worker_factory, mqtt, tmp_path
):
    model = ColourModel()
    async with FakeLLM(responder=model) as fake:
        cluster = make_cluster(
            worker_factory, broker, tmp_path, fake, ["w1", "w2"],
            frigate={"cameras": {"porch": {"friendly_name": "Porch"}}},
            watch={"min_interval_s": 0.5},
        )  # fmt: skip
        await start_all(mqtt, cluster)
        p = cluster.prefix
        await frame(mqtt, p, BLUE)
        out = await request(
            mqtt, p, "erin", "watch",
            {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
        )  # fmt: skip
        job_id = out[-1]["job_id"]
        deadline = out[-1]["job"]["deadline"]
        section = await until_health(mqtt, cluster, lambda c: c["watch_owners"].get(job_id))
        owner = section["watch_owners"][job_id]
        other = "w1" if owner == "w2" else "w2"
        alert_q = await mqtt.subscribe(f"{p}/erin/watch/{job_id}/alert")
        cluster.worker(owner).kill()
        await until_health(mqtt, cluster, lambda c: c["watch_owners"].get(job_id) == other)
        await car_arrives(mqtt, cluster.frigate_prefix, "1767225600.0-car9")
        await frame(mqtt, p, RED)
        alert = (await next_message(alert_q, 30)).json()
        assert alert["status"] == "success" and alert["job_id"] == job_id
        got = await request(mqtt, p, "erin", "watch", {"action": "get", "job_id": job_id})
        assert got[-1]["job"]["deadline"] == deadline
        assert '"watches_adopted"' in cluster.worker(other).log_text()


async def test_a_conversation_continues_on_another_worker(broker, worker_factory, mqtt, tmp_path):
    seen: list[RecordedRequest] = []

    def answer(req: RecordedRequest) -> Reply:
        seen.append(req)
        return text(f"answer {len(seen)}")

    async with FakeLLM(responder=answer) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2"])
        await start_all(mqtt, cluster)
        p = cluster.prefix
        first = await request(
            mqtt, p, "ann", "chat", {"text": "my name is Ann", "conversation_id": "conv1"}
        )
        assert first[-1]["type"] == "done"
        (served,) = sql(
            cluster.db_url,
            "SELECT w.name FROM requests r JOIN workers w ON w.id = r.worker_id WHERE r.id = $1",
            first[-1]["id"],
        )
        # The worker that held the first turn stops: the next turn must land elsewhere.
        cluster.worker(served[0]).signal(signal.SIGTERM)
        assert cluster.worker(served[0]).wait(15) == 0
        second = await request(
            mqtt, p, "ann", "chat", {"text": "what is my name?", "conversation_id": "conv1"}
        )
        assert second[-1]["type"] == "done" and second[-1]["conversation_id"] == "conv1"
        history = json.dumps(seen[-1].messages)
        assert "my name is Ann" in history and "answer 1" in history


async def test_a_graceful_stop_hands_its_watches_over_at_once(
    broker, worker_factory, mqtt, tmp_path
):
    model = ColourModel()
    async with FakeLLM(responder=model) as fake:
        # A scan only every 60 s: the hand-over must come from the stopping worker's word.
        cluster = make_cluster(
            worker_factory, broker, tmp_path, fake, ["w1", "w2"], takeover_s=600,
            frigate={"cameras": {"porch": {"friendly_name": "Porch"}}},
            watch={"min_interval_s": 0.5},
        )  # fmt: skip
        await start_all(mqtt, cluster)
        p = cluster.prefix
        await frame(mqtt, p, BLUE)
        out = await request(
            mqtt, p, "fay", "watch",
            {"action": "start", "camera": "porch", "condition": "a red car is at the door"},
        )  # fmt: skip
        job_id = out[-1]["job_id"]
        section = await until_health(mqtt, cluster, lambda c: c["watch_owners"].get(job_id))
        owner = section["watch_owners"][job_id]
        other = "w1" if owner == "w2" else "w2"
        status_q = await mqtt.subscribe(f"{p}/status")
        assert (await next_message(status_q)).payload == b"online"
        cluster.worker(owner).signal(signal.SIGTERM)
        assert cluster.worker(owner).wait(15) == 0
        await until_health(mqtt, cluster, lambda c: c["watch_owners"].get(job_id) == other, 10)
        alert_q = await mqtt.subscribe(f"{p}/fay/watch/{job_id}/alert")
        await car_arrives(mqtt, cluster.frigate_prefix, "1767225600.0-car7")
        await frame(mqtt, p, RED)
        assert (await next_message(alert_q, 20)).json()["status"] == "success"
        # The service stayed online throughout: one worker still lives.
        assert drained(status_q) <= {b"online"}


async def test_two_workers_started_at_once_on_an_empty_database_both_come_up(
    broker, worker_factory, mqtt, tmp_path
):
    async with FakeLLM(responder=lambda _r: text("hi")) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2"])
        await start_all(mqtt, cluster)
        section = await until_health(mqtt, cluster, lambda c: len(c.get("workers", [])) == 2)
        assert sorted(w["name"] for w in section["workers"]) == ["w1", "w2"]
        for _ in range(4):
            assert (await request(mqtt, cluster.prefix, "u", "chat", {"text": "hi"}))[-1][
                "type"
            ] == "done"


async def test_requests_left_in_a_dead_workers_session_are_answered_and_status_stays_online(
    broker, worker_factory, mqtt, tmp_path
):
    async with FakeLLM(responder=lambda _r: text("ok")) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2"])
        await start_all(mqtt, cluster)
        p = cluster.prefix
        service_q = await mqtt.subscribe(f"{p}/status")
        assert (await next_message(service_q)).payload == b"online"
        w2_q = await mqtt.subscribe(cluster.status_topic("w2"))
        assert (await next_message(w2_q)).payload == b"online"
        cluster.worker("w2").kill()
        assert (await next_message(w2_q)).payload == b"offline"
        # Published before the others noticed: the broker queues a share for w2's session.
        replies = await asyncio.gather(
            *(request(mqtt, p, "v", "chat", {"text": f"q{i}"}, timeout=40) for i in range(20))
        )
        assert all(r[-1]["type"] == "done" for r in replies)
        assert '"session_swept"' in cluster.worker("w1").log_text()
        # w1 still lives: the service never went offline (w2's will was cancelled).
        await until_health(mqtt, cluster, lambda c: [w["name"] for w in c["workers"]] == ["w1"])
        assert drained(service_q) <= {b"online"}
        cluster.worker("w1").signal(signal.SIGTERM)
        assert cluster.worker("w1").wait(15) == 0
        assert (await next_message(service_q)).payload == b"offline"


async def test_cancels_reach_the_worker_that_runs_the_chat(broker, worker_factory, mqtt, tmp_path):
    async with FakeLLM(responder=lambda _r: slow_tokens(400, 0.05)) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["w1", "w2"])
        await start_all(mqtt, cluster)
        p = cluster.prefix
        queue = await mqtt.subscribe(f"{p}/kim/reply/+")
        ids = [f"slow{i}" for i in range(6)]
        for rid in ids:
            await mqtt.publish(f"{p}/kim/chat", {"id": rid, "text": "talk"})
        await fake.wait_for_requests(6, timeout=20)
        for rid in ids:
            await mqtt.publish(f"{p}/kim/chat/cancel", {"id": rid})
        ended: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(30):
            while len(ended) < len(ids):
                body = (await queue.get()).json()
                if body["type"] in ("done", "error"):
                    ended[body["id"]] = body
        assert {rid: b["error"]["code"] for rid, b in ended.items()} == dict.fromkeys(
            ids, "cancelled"
        )
        rows = sql(cluster.db_url, "SELECT DISTINCT worker_id FROM requests WHERE kind='chat'")
        assert len(rows) == 2  # the chats ran on both workers


async def test_health_names_the_worker_that_answered(broker, worker_factory, mqtt, tmp_path):
    async with FakeLLM(responder=lambda _r: text("hi")) as fake:
        cluster = make_cluster(worker_factory, broker, tmp_path, fake, ["solo"])
        await start_all(mqtt, cluster)
        section = (await health(mqtt, cluster))["cluster"]
        assert section["worker"] == "solo" and section["history_writer"] == "solo"
        assert set(section["roles_here"]) == {"history_writer", "homeassistant"}
        assert [w["name"] for w in section["workers"]] == ["solo"]

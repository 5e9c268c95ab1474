"""Chat end to end: the real `lookout run`, a real mosquitto, the fake LLM over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
import pytest

from tests.fake_llm import FakeLLM, error, hang, reasoning, text, tool_calls
from tests.frigate_replay import build_session
from tests.mqttc import MqttTestClient, next_message, request, until_terminal

pytestmark = pytest.mark.e2e


def provider(fake: FakeLLM, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "fake": {
                "base_url": fake.base_url,
                "api_key": "sk-test-secret-key",
                "model": "fake-model",
                "max_retries": 0,
                "timeout_s": 3,
                **extra,
            }
        }
    }


async def start(worker_factory, broker, mqtt, fake, **config: Any):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    fp = f"{prefix}fr"
    cfg = {"llm": provider(fake), "frigate": {"topic_prefix": fp}, **config}
    worker = worker_factory(broker, prefix=prefix, config=cfg)
    worker.start()
    await worker.wait_online(mqtt)
    return worker, fp


async def replay_frigate(mqtt: MqttTestClient, fp: str) -> Any:
    session = build_session(time.time() - 600, fp)
    for topic, payload, retain in session.messages:
        await mqtt.publish(topic, payload, qos=1, retain=retain)
    return session


def two_rounds(final: str) -> list[Any]:
    return [
        tool_calls([("search_objects", {"label": "person", "after": "2020-01-01"})]),
        tool_calls([("get_live_context", {"camera": "front_door"})], style="gemini_no_index"),
        text(final, chunk_size=3),
    ]


async def wait_events_stored(mqtt, prefix: str, n: int) -> None:
    """Event-driven: ask health until the store reports n written events."""
    async with asyncio.timeout(20):
        while True:
            health = (await request(mqtt, prefix, "probe", "health", {}))[-1]
            store = health["store"]
            if store.get("rows_written", 0) >= n and store.get("pending", 1) == 0:
                return
            await asyncio.sleep(0.1)  # re-ask cadence, not synchronisation


async def test_two_round_tool_chat_over_three_reply_routes(broker, worker_factory, mqtt):
    async with FakeLLM() as fake:
        worker, fp = await start(worker_factory, broker, mqtt, fake)
        p = worker.prefix
        await replay_frigate(mqtt, fp)
        await wait_events_stored(mqtt, p, 3)

        # 1. Node-RED style: MQTT 5 Response Topic + Correlation Data, streaming.
        fake.push(*two_rounds("Alice came by at noon."))
        rt = f"{p}/nodered/responses"
        replies_q = await mqtt.subscribe(rt)
        await mqtt.publish(
            f"{p}/nodered/chat",
            {"id": "nr1", "text": "Who came by today?"},
            response_topic=rt,
            correlation_data=b"corr-nr1",
        )
        replies = await until_terminal(replies_q, "nr1", timeout=30)
        types = [r["type"] for r in replies]
        assert types[-1] == "done", replies[-1]
        assert [r["seq"] for r in replies] == list(range(len(replies)))
        assert types.count("tool_call") == 2 and types.count("tool_result") == 2
        assert types.index("tool_call") < types.index("tool_result")
        assert "content" in types and "stats" in types
        done = replies[-1]
        assert done["message"]["content"] == "Alice came by at noon."
        assert (
            "".join(r["delta"] for r in replies if r["type"] == "content")
            == done["message"]["content"]
        )
        assert done["tool_iterations"] == 2 and done["finish_reason"] == "stop"
        search = next(
            r for r in replies if r["type"] == "tool_result" and r["name"] == "search_objects"
        )
        assert search["ok"] and search["result"]["count"] >= 1
        assert all(
            o["camera"] in ("front_door", "driveway", "backyard")
            for o in search["result"]["objects"]
        )
        live = next(
            r for r in replies if r["type"] == "tool_result" and r["name"] == "get_live_context"
        )
        assert live["result"]["camera"] == "front_door"
        # The model received the image once, as a user message after the tool result.
        reqs = await fake.wait_for_requests(3)
        final_request = reqs[2].messages
        assert any(isinstance(m.get("content"), list) for m in final_request if m["role"] == "user")
        assert reqs[0].tools and {t["function"]["name"] for t in reqs[0].tools} >= {
            "search_objects",
            "get_recap",
        }
        assert (
            reqs[0].messages[0]["role"] == "system"
            and "front_door" in reqs[0].messages[0]["content"]
        )

        # 2. Home Assistant style: paho, MQTT 3.1.1, reply_to in the payload, no streaming.
        fake.push(*two_rounds("Nobody else."))
        got: list[dict[str, Any]] = []
        finished = threading.Event()

        def on_message(_c: Any, _u: Any, m: Any) -> None:
            body = json.loads(m.payload)
            got.append(body)
            if body["type"] in ("done", "error"):
                finished.set()

        subscribed = threading.Event()
        ha = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"ha-{p}", protocol=paho.MQTTv311
        )
        ha.on_message = on_message
        ha.on_subscribe = lambda *_a: subscribed.set()
        ha.connect(broker.host, broker.port)
        ha.loop_start()
        try:
            ha.subscribe(f"{p}/ha/answer", qos=1)
            assert await asyncio.to_thread(subscribed.wait, 5)
            body = {
                "id": "ha1",
                "text": "Anyone else?",
                "stream": False,
                "reply_to": f"{p}/ha/answer",
            }
            ha.publish(f"{p}/ha/chat", json.dumps(body), qos=1)
            assert await asyncio.to_thread(finished.wait, 30)
        finally:
            ha.loop_stop()
            ha.disconnect()
        assert [g["type"] for g in got] == ["done"]
        assert got[0]["message"]["content"] == "Nobody else." and got[0]["tool_iterations"] == 2

        # 3. mosquitto_rr: one request, one `done` (stream false), printed to stdout.
        fake.push(*two_rounds("All quiet."))
        out = await asyncio.to_thread(
            subprocess.run,
            ["mosquitto_rr", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", f"{p}/rr/chat", "-e", f"{p}/rr/reply", "-W", "30",
             "-m", json.dumps({"text": "Status?", "stream": False})],
            capture_output=True, text=True, timeout=40,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["message"]["content"] == "All quiet."
        assert "sk-test-secret-key" not in worker.log_text()


async def test_conversation_memory_by_id(broker, worker_factory, mqtt):
    async with FakeLLM() as fake:
        worker, _ = await start(worker_factory, broker, mqtt, fake)
        fake.push(text("Hello Bob."), text("You are Bob."))
        first = await request(mqtt, worker.prefix, "bob", "chat", {"text": "I am Bob."})
        cid = first[-1]["conversation_id"]
        assert cid
        second = await request(
            mqtt, worker.prefix, "bob", "chat", {"text": "Who am I?", "conversation_id": cid}
        )
        assert second[-1]["message"]["content"] == "You are Bob."
        reqs = await fake.wait_for_requests(2)
        contents = [m.get("content") for m in reqs[1].messages]
        assert any("I am Bob." in str(c) for c in contents) and any(
            c == "Hello Bob." for c in contents
        )
        # Someone else cannot continue Bob's conversation.
        other = await request(
            mqtt, worker.prefix, "mallory", "chat", {"text": "hi", "conversation_id": cid}
        )
        assert other[-1]["type"] == "error" and other[-1]["error"]["code"] == "forbidden"


async def test_llm_failures_give_classified_errors_and_the_worker_keeps_serving(
    broker, worker_factory, mqtt
):
    async with FakeLLM() as fake:
        worker, _ = await start(worker_factory, broker, mqtt, fake)
        cases = [
            (error(500), "llm_unavailable"),
            (error(401), "llm_auth"),
            (hang(), "llm_timeout"),
        ]
        for reply, code in cases:
            fake.push(reply)
            out = await request(mqtt, worker.prefix, "u", "chat", {"text": "hi"}, timeout=30)
            assert out[-1]["type"] == "error", out
            assert out[-1]["error"]["code"] == code
        fake.push(text("still here"))
        out = await request(mqtt, worker.prefix, "u", "chat", {"text": "hi"})
        assert out[-1]["message"]["content"] == "still here"


async def test_set_camera_state_confirmed_by_a_simulated_frigate(broker, worker_factory, mqtt):
    async with FakeLLM() as fake:
        worker, fp = await start(
            worker_factory, broker, mqtt, fake, users={"admin": {"role": "admin"}}
        )
        await replay_frigate(mqtt, fp)
        commands = await mqtt.subscribe(f"{fp}/+/+/set")

        async def simulated_frigate() -> None:
            while True:
                msg = await commands.get()
                cam, feature, _ = msg.topic[len(fp) + 1 :].split("/")
                await mqtt.publish(f"{fp}/{cam}/{feature}/state", msg.payload, retain=True)

        echo = asyncio.create_task(simulated_frigate())
        try:
            out = await request(
                mqtt, worker.prefix, "admin", "tool",
                {"tool_name": "set_camera_state", "arguments": {"camera": "backyard", "feature": "record", "value": "on"}},
            )  # fmt: skip
        finally:
            echo.cancel()
        assert out[-1]["type"] == "done", out
        assert out[-1]["result"] == {
            "feature": "record",
            "value": "ON",
            "cameras": {"backyard": "confirmed"},
        }
        # A viewer may not.
        denied = await request(
            mqtt, worker.prefix, "viewer1", "tool",
            {"tool_name": "set_camera_state", "arguments": {"camera": "backyard", "feature": "detect", "value": "off"}},
        )  # fmt: skip
        assert denied[-1]["error"]["code"] == "forbidden", denied


async def test_cancel_a_running_chat(broker, worker_factory, mqtt):
    async with FakeLLM() as fake:
        worker, _ = await start(worker_factory, broker, mqtt, fake)
        fake.push(hang())
        queue = await mqtt.subscribe(f"{worker.prefix}/zed/reply/c1")
        await mqtt.publish(f"{worker.prefix}/zed/chat", {"id": "c1", "text": "hang"})
        await fake.wait_for_requests(1)
        await mqtt.publish(f"{worker.prefix}/zed/chat/cancel", {"id": "c1"})
        out = await until_terminal(queue, "c1")
        assert out[-1]["error"]["code"] == "cancelled"
        with pytest.raises(TimeoutError):
            await next_message(queue, timeout=0.5)


QUIRK_CALLS = [("get_profile_status", {}), ("search_objects", {"label": "person"})]
QUIRKS = [
    ("openai", tool_calls(QUIRK_CALLS, style="openai", usage=(10, 5))),
    ("interleaved fragments", tool_calls(QUIRK_CALLS, style="fragments")),
    ("whole call in one chunk", tool_calls(QUIRK_CALLS, style="whole")),
    ("gemini: no index, stop on a tool turn", tool_calls(QUIRK_CALLS, style="gemini_no_index")),
    ("ollama: every call at index 0", tool_calls(QUIRK_CALLS, style="ollama_index0")),
    ("no index on fragments", tool_calls(QUIRK_CALLS, style="no_index_fragments")),
    ("no ids", tool_calls(QUIRK_CALLS, style="no_ids")),
    (
        "empty and missing arguments",
        tool_calls(
            [{"name": "get_profile_status", "arguments": ""}, ("get_profile_status", {})],
            style="whole",
        ),
    ),
]


@pytest.mark.parametrize(("name", "turn"), QUIRKS, ids=[q[0] for q in QUIRKS])
async def test_server_quirks_through_the_worker(broker, worker_factory, mqtt, name, turn):
    async with FakeLLM() as fake:
        worker, _ = await start(worker_factory, broker, mqtt, fake)
        fake.push(turn, text("done."))
        out = await request(mqtt, worker.prefix, "q", "chat", {"text": "go"}, timeout=30)
        assert out[-1]["type"] == "done", (name, out[-1])
        results = [r for r in out if r["type"] == "tool_result"]
        assert len(results) == 2, (name, results)
        assert all(r["ok"] for r in results), (name, results)
        reqs = await fake.wait_for_requests(2)
        replayed = reqs[1].messages
        assistant = next(m for m in replayed if m["role"] == "assistant")
        call_ids = [c["id"] for c in assistant["tool_calls"]]
        assert len(set(call_ids)) == 2  # unique, even when the server reused or omitted them
        tool_ids = [m["tool_call_id"] for m in replayed if m["role"] == "tool"]
        assert tool_ids == call_ids


async def test_reasoning_fields_invalid_arguments_and_gemini_signatures(
    broker, worker_factory, mqtt
):
    async with FakeLLM() as fake:
        worker, _ = await start(worker_factory, broker, mqtt, fake)
        signed = {
            "name": "get_profile_status",
            "arguments": {},
            "extra": {"extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}},
        }
        fake.push(
            tool_calls([signed], style="gemini_no_index"),
            tool_calls([{"name": "search_objects", "arguments": '{"label": "per'}], style="whole"),
            reasoning("thinking it over", "answer one", field_name="reasoning_content"),
        )
        out = await request(mqtt, worker.prefix, "g", "chat", {"text": "go"}, timeout=30)
        assert out[-1]["type"] == "done", out[-1]
        assert out[-1]["message"]["content"] == "answer one"
        assert "".join(r["delta"] for r in out if r["type"] == "reasoning") == "thinking it over"
        bad = [r for r in out if r["type"] == "tool_result" and r["name"] == "search_objects"]
        assert bad and not bad[0]["ok"] and "JSON" in bad[0]["result"]["error"]
        reqs = await fake.wait_for_requests(3)
        assistant = next(m for m in reqs[1].messages if m["role"] == "assistant")
        assert (
            assistant["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
            == "c2lnbmF0dXJl"
        )
        # The other reasoning field name.
        fake.push(reasoning("hmm", "answer two", field_name="reasoning"))
        out = await request(mqtt, worker.prefix, "g", "chat", {"text": "again"}, timeout=30)
        assert "".join(r["delta"] for r in out if r["type"] == "reasoning") == "hmm"
        assert out[-1]["message"]["content"] == "answer two"

"""`lookout ask`, `watch`, `tools` and `events` against the real worker and the fake LLM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.broker import REPO
from tests.e2e.helpers import Lookout, lookout, lookout_with_fake_llm, replay_frigate
from tests.fake_llm import error, hang, text, tool_calls
from tests.mqttc import MqttTestClient, next_message

pytestmark = pytest.mark.e2e


@pytest.fixture
async def env(broker, worker_factory, mqtt) -> AsyncIterator[Lookout]:
    async with lookout_with_fake_llm(broker, worker_factory, mqtt) as env:
        yield env


async def test_ask_streams_the_answer_and_shows_tool_calls(env: Lookout, mqtt: MqttTestClient):
    answer = "Alice came by at noon; nobody else."
    # Tokens 60 ms apart, as a model sends them: lookout's coalescer forwards several deltas.
    env.fake.push(
        tool_calls([("search_objects", {"label": "person"})]),
        text(answer, chunk_size=3, delay_s=0.06),
    )
    requests = await mqtt.subscribe(f"{env.prefix}/alice/chat")
    replies = await mqtt.subscribe(f"{env.prefix}/alice/reply/+")
    run = await env.cli("ask", "Who came", "by today?")
    assert run.code == 0, run.stderr
    assert run.stdout == answer + "\n"  # piped stdout: the answer alone
    assert '→ search_objects {"label": "person"}' in run.stderr
    assert re.search(r"← search_objects ok: \{.*\"count\"", run.stderr), run.stderr
    conversation = re.search(r"conversation (\w+) \(1 tool rounds\)", run.stderr)
    assert conversation, run.stderr
    sent = (await next_message(requests)).json()
    assert sent["text"] == "Who came by today?" and sent["stream"] is True
    # It really streamed: the answer came as many content deltas before `done`.
    types = []
    while not types or types[-1] not in ("done", "error"):
        types.append((await next_message(replies)).json()["type"])
    assert types.count("content") >= 3 and types[-1] == "done"

    # --conversation continues it: the model sees the first exchange.
    env.fake.push(text("You asked who came by."))
    run = await env.cli("ask", "What did I ask?", "--conversation", conversation[1])
    assert run.code == 0, run.stderr
    assert run.stdout == "You asked who came by.\n"
    reqs = await env.fake.wait_for_requests(3)
    assert any("Who came by today?" in str(m.get("content")) for m in reqs[2].messages)
    assert f"conversation {conversation[1]}" in run.stderr


async def test_ask_json_prints_the_done_reply(env: Lookout, mqtt: MqttTestClient):
    env.fake.push(text("All quiet."))
    requests = await mqtt.subscribe(f"{env.prefix}/bob/chat")
    run = await env.cli("ask", "--json", "Anything happening?", user="bob")
    assert run.code == 0, run.stderr
    reply = json.loads(run.stdout)
    assert reply["type"] == "done" and reply["message"]["content"] == "All quiet."
    assert reply["conversation_id"] and reply["finish_reason"] == "stop"
    assert (await next_message(requests)).json()["stream"] is False
    assert run.stderr == ""


async def test_ask_exits_1_with_the_error_code_on_an_error_reply(env: Lookout):
    env.fake.push(error(401, "key refused"))
    run = await env.cli("ask", "hello")
    assert run.code == 1
    assert run.stdout == ""
    assert run.stderr.startswith("lookout: error llm_auth: "), run.stderr
    assert "sk-e2e-test" not in run.stderr
    env.fake.push(error(401, "key refused"))
    run = await env.cli("ask", "--json", "hello")
    assert run.code == 1 and json.loads(run.stdout)["error"]["code"] == "llm_auth"


async def test_tools_lists_the_retained_definitions_and_runs_one(
    env: Lookout, mqtt: MqttTestClient
):
    run = await env.cli("tools")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["TOOL", "ARGUMENTS"]
    names = [line.split()[0] for line in lines[1:]]
    assert {"search_objects", "get_live_context", "start_camera_watch", "get_recap"} <= set(names)
    search = next(line for line in lines if line.startswith("search_objects"))
    assert "camera" in search and "limit" in search
    listed = json.loads((await env.cli("tools", "--json")).stdout)
    assert {t["function"]["name"] for t in listed["tools"]} == set(names)

    await replay_frigate(mqtt, env)
    run = await env.cli("tools", "--run", "search_objects", "--args", '{"label": "dog"}')
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["count"] >= 1 and {o["label"] for o in result["objects"]} == {"dog"}

    bad = await env.cli("tools", "--run", "search_objects", "--args", "{nope")
    assert bad.code == 2 and "--args is not JSON" in bad.stderr
    unknown = await env.cli("tools", "--run", "no_such_tool")
    assert unknown.code == 1 and unknown.stderr.startswith("lookout: error ")


async def test_tools_with_nobody_on_the_prefix_exits_1(broker, tmp_path):
    cfg = tmp_path / "empty.yml"
    cfg.write_text(
        f"mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: lk{uuid.uuid4().hex[:8]}}}\n"
    )
    run = await lookout("tools", "--config", str(cfg))
    assert run.code == 1 and "is lookout running there?" in run.stderr


async def test_events_prints_stored_events_as_a_table(env: Lookout, mqtt: MqttTestClient):
    await replay_frigate(mqtt, env)
    run = await env.cli("events", "--camera", "front_door", "--label", "person", "--limit", "5")
    assert run.code == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:3] == ["START", "CAMERA", "LABEL"]
    assert rows and all(" front_door " in f" {r} " and " person " in f" {r} " for r in rows)
    assert any("Alice" in r for r in rows)  # face recognition named her
    assert re.search(r"^\d+ events", run.stderr)
    as_json = json.loads((await env.cli("events", "--label", "car", "--json")).stdout)
    assert as_json["tool_name"] == "search_objects"
    assert {o["label"] for o in as_json["result"]["objects"]} == {"car"}
    none = await env.cli("events", "--label", "giraffe")
    assert none.code == 0 and none.stdout == "no events\n"


async def test_watch_start_list_cancel(env: Lookout, mqtt: MqttTestClient):
    await replay_frigate(mqtt, env)
    states = await mqtt.subscribe(f"{env.prefix}/carol/watch/+")
    run = await env.cli(
        "watch", "start", "--camera", "front_door", "--condition", "a parcel is on the porch",
        "--minutes", "5", "--labels", "person,package", user="carol",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    started = re.fullmatch(
        r"watching front_door for “a parcel is on the porch” \(job (\w+)\)\n", run.stdout
    )
    assert started, run.stdout
    job_id = started[1]
    state = (await next_message(states)).json()
    assert state["job_id"] == job_id and state["labels"] == ["person", "package"]
    assert state["max_duration_minutes"] == 5

    listed = await env.cli("watch", "list", user="carol")
    assert listed.code == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["JOB", "USER", "CAMERA", "STATUS", "CONDITION"]
    assert len(rows) == 1 and rows[0].split()[:3] == [job_id, "carol", "front_door"]
    assert (await env.cli("watch", "list", user="dave")).stdout == "no watches\n"

    cancelled = await env.cli("watch", "cancel", job_id, user="carol")
    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.stdout == f"cancelled watch {job_id}\n"
    jobs = json.loads((await env.cli("watch", "list", "--json", user="carol")).stdout)["jobs"]
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job_id, "cancelled")]

    missing = await env.cli("watch", "cancel", "nosuchjob", user="carol")
    assert missing.code == 1 and missing.stderr.startswith("lookout: error not_found: ")


async def test_ctrl_c_cancels_the_running_chat(broker, worker_factory, mqtt: MqttTestClient):
    # The model's time limit is far beyond the test's: with the usual 5 s, a loaded machine
    # once let the model time out before the interrupt reached `ask`.
    async with lookout_with_fake_llm(broker, worker_factory, mqtt, llm_timeout_s=120) as env:
        env.fake.push(hang())
        replies = await mqtt.subscribe(f"{env.prefix}/alice/reply/+")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "ask", "wait forever", "--config", env.config,
            "--user", "alice", cwd=REPO, env={k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await env.fake.wait_for_requests(1, timeout=20)  # the question reached the model
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 130, err
        assert b"cancelling the request" in err and b"Traceback" not in err
        # lookout ended the chat with the caller's cancel.
        async with asyncio.timeout(20):
            while (reply := (await next_message(replies, 20)).json())["type"] != "error":
                pass
        assert reply["error"]["code"] == "cancelled"

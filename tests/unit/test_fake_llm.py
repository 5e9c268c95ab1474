"""The fake OpenAI-compatible server itself: in-process helpers and the standalone mode."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests import fake_llm as f
from tests.broker import REPO


@pytest.fixture
async def fake() -> AsyncIterator[f.FakeLLM]:
    async with f.FakeLLM(models=["m1", "m2"]) as server:
        yield server


def sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0, timeout=5.0)


async def test_non_streaming_body_is_assembled(fake):
    fake.push(
        f.tool_calls([("search_objects", {"label": "cat"})], content="Looking.", usage=(3, 4))
    )
    client = sdk(fake.base_url)
    try:
        resp = await client.chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": "hi"}],
            stream_options={"include_usage": True},
        )
    finally:
        await client.close()
    message = resp.choices[0].message
    assert message.content == "Looking."
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "search_objects",
        {"label": "cat"},
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 4


async def test_models_endpoint(fake):
    client = sdk(fake.base_url)
    try:
        models = await client.models.list()
    finally:
        await client.close()
    assert [m.id for m in models.data] == ["m1", "m2"]


async def test_usage_only_when_asked(fake):
    fake.push(f.text("a", usage=(1, 1)))
    client = sdk(fake.base_url)
    try:
        stream = await client.chat.completions.create(model="m1", messages=[], stream=True)
        chunks = [c async for c in stream]
    finally:
        await client.close()
    assert all(c.usage is None for c in chunks)


async def test_dynamic_responder_runs_a_tool_loop(fake):
    fake.set_responder(f.tool_then_text_responder([("list_cameras", {})], "Two cameras."))
    client = sdk(fake.base_url)
    tools = [
        {"type": "function", "function": {"name": "list_cameras", "parameters": {"type": "object"}}}
    ]
    try:
        first = await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "cams?"}], tools=tools
        )
        assert first.choices[0].message.tool_calls
        call = first.choices[0].message.tool_calls[0]
        second = await client.chat.completions.create(
            model="m1",
            messages=[
                {"role": "user", "content": "cams?"},
                {"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "[]"},
            ],
            tools=tools,
        )
    finally:
        await client.close()
    assert second.choices[0].message.content == "Two cameras."


async def test_wait_for_requests_is_event_driven_and_times_out(fake):
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(1, timeout=0.05)
    fake.push(f.text("x"))
    waiter = asyncio.create_task(fake.wait_for_requests(1), name="wait-for-request")
    client = sdk(fake.base_url)
    try:
        await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "q"}]
        )
    finally:
        await client.close()
    [req] = await waiter
    assert req.messages == [{"role": "user", "content": "q"}]
    assert req.last_message == {"role": "user", "content": "q"}


def test_reply_json_round_trip():
    reply = f.tool_calls([("a", {"x": 1})], style="ollama_index0", usage=(1, 2))
    assert f.Reply.from_json(json.loads(json.dumps(reply.to_json()))) == reply
    assert f.load_responder("echo") is f.echo_responder
    assert f.load_responder("tests.fake_llm:echo_responder") is f.echo_responder


def test_unknown_tool_style_is_rejected():
    with pytest.raises(ValueError, match="unknown style"):
        f.tool_calls([("a", {})], style="nope")


async def test_standalone_process_with_script_and_control_endpoints(tmp_path: Path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([f.text("from the script").to_json()]))
    port_file = tmp_path / "port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_llm",
        "--port",
        "0",
        "--script",
        str(script),
        "--responder",
        "echo",
        "--port-file",
        str(port_file),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert line.startswith("FAKE_LLM_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        assert url.endswith(f":{port_file.read_text()}")
        client = sdk(f"{url}/v1")
        async with aiohttp.ClientSession() as http:
            try:
                first = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "a"}]
                )
                assert first.choices[0].message.content == "from the script"
                second = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "ping"}]
                )
                assert second.choices[0].message.content == "echo: ping"
                async with http.post(f"{url}/_script", json=f.error(401, "nope").to_json()) as resp:
                    assert (await resp.json())["queued"] == 1
                with pytest.raises(openai.AuthenticationError):
                    await client.chat.completions.create(model="m", messages=[])
                async with http.get(
                    f"{url}/_requests", params={"wait": "3", "timeout": "5"}
                ) as resp:
                    recorded = await resp.json()
                assert [r["body"]["messages"] for r in recorded][:2] == [
                    [{"role": "user", "content": "a"}],
                    [{"role": "user", "content": "ping"}],
                ]
                async with http.get(
                    f"{url}/_requests", params={"wait": "9", "timeout": "0.05"}
                ) as resp:
                    assert resp.status == 408
                factory = {
                    "path": "tests.fake_llm:tool_then_text_responder",
                    "args": {"calls": [["list_cameras", {}]], "final": "Two cameras."},
                }
                async with http.post(f"{url}/_responder", json=factory) as resp:
                    assert resp.status == 200
                tools = [
                    {"type": "function", "function": {"name": "list_cameras", "parameters": {}}}
                ]
                third = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "cams?"}], tools=tools
                )
                assert third.choices[0].message.tool_calls
                assert third.choices[0].message.tool_calls[0].function.name == "list_cameras"
                async with http.post(f"{url}/_responder", json={}) as resp:
                    assert (await resp.json()) == {"responder": None}
                async with http.post(f"{url}/_reset") as resp:
                    assert resp.status == 200
                async with http.get(f"{url}/_health") as resp:
                    assert (await resp.json())["requests"] == 0
            finally:
                await client.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0

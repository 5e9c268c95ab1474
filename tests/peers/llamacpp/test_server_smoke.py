"""The real llama.cpp server plays every scripted behaviour, through the real openai SDK.

These pin down what the scripted model does (``model.py``) and how this llama.cpp build
answers, so tests of lookout can rely on both. They never skip: no binary means failure.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import pytest

from service.watch.vlm import RESPONSE_FORMAT
from tests.peers.llamacpp import model
from tests.peers.llamacpp.server import LlamaServer

pytestmark = pytest.mark.store_independent  # the server alone, through the SDK: no lookout

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_objects",
            "description": "Search the history of tracked objects.",
            "parameters": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "camera": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_live_context",
            "description": "See one camera right now.",
            "parameters": {
                "type": "object",
                "properties": {"camera": {"type": "string"}},
                "required": ["camera"],
            },
        },
    },
]
VERDICT_FORMAT: dict[str, Any] = RESPONSE_FORMAT
"""lookout's own watch verdict format, so the real server is tried with what lookout sends."""
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@dataclass
class Reply:
    """A completion, streamed or not, reduced to what the tests compare."""

    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    deltas: int = 0
    usage: Any = None


def connect(server: LlamaServer, api_key: str = "unused") -> openai.AsyncOpenAI:
    """An SDK client that opens a new connection per request.

    This llama-server closes the connection after every streamed response although it
    answers ``Keep-Alive`` (see ``test_streamed_responses_close_the_connection``); a
    pooled connection reused right after a stream then fails at random with "Server
    disconnected without sending a response". Without keep-alive the tests never race.
    """
    http = openai.DefaultAsyncHttpx2Client(limits=httpx2.Limits(max_keepalive_connections=0))
    return openai.AsyncOpenAI(
        base_url=server.base_url, api_key=api_key, max_retries=0, timeout=30, http_client=http
    )


@pytest.fixture
async def client(llama_server: LlamaServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with connect(llama_server) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def ask(c: openai.AsyncOpenAI, messages: list[dict[str, Any]], **kw: Any) -> Reply:
    kw.setdefault("temperature", 0)
    r = await c.chat.completions.create(model="any", messages=messages, **kw)  # type: ignore[call-overload]
    choice = r.choices[0]
    msg = choice.message
    calls = [(t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls or []]
    return Reply(
        content=msg.content or "",
        reasoning=(msg.model_extra or {}).get("reasoning_content") or "",
        calls=calls,
        call_ids=[t.id for t in msg.tool_calls or []],
        finish_reason=choice.finish_reason,
        usage=r.usage,
    )


async def ask_streamed(c: openai.AsyncOpenAI, messages: list[dict[str, Any]], **kw: Any) -> Reply:
    kw.setdefault("temperature", 0)
    stream = await c.chat.completions.create(model="any", messages=messages, stream=True, **kw)  # type: ignore[call-overload]
    reply, names, args = Reply(), {}, {}
    async for chunk in stream:
        if chunk.usage is not None:
            reply.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            reply.deltas += 1
            reply.content += delta.content or ""
            reply.reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for t in delta.tool_calls or []:
                if t.id:
                    reply.call_ids.append(t.id)
                if t.function and t.function.name:
                    names[t.index] = t.function.name
                if t.function and t.function.arguments:
                    args[t.index] = args.get(t.index, "") + t.function.arguments
            reply.finish_reason = choice.finish_reason or reply.finish_reason
    reply.calls = [(names[i], json.loads(args[i])) for i in sorted(names)]
    return reply


ASKERS = pytest.mark.parametrize("asker", [ask, ask_streamed], ids=["plain", "streamed"])
Asker = Callable[..., Any]


@ASKERS
async def test_plain_answer(client: openai.AsyncOpenAI, asker: Asker) -> None:
    reply = await asker(client, user("Is the gravel path clear?"))
    assert (reply.content, reply.finish_reason) == (model.PLAIN_ANSWER, "stop")
    assert reply.calls == [] and reply.reasoning == ""
    if asker is ask_streamed:
        assert reply.deltas >= 5  # one per token, not one lump


@ASKERS
async def test_no_trigger_gives_the_default_answer(
    client: openai.AsyncOpenAI, asker: Asker
) -> None:
    reply = await asker(client, user("Hello there"), tools=TOOLS)
    assert (reply.content, reply.finish_reason) == (model.DEFAULT_ANSWER, "stop")


@ASKERS
@pytest.mark.parametrize("extra", [{}, NO_THINKING], ids=["thinking", "no-thinking"])
async def test_one_tool_call(
    client: openai.AsyncOpenAI, asker: Asker, extra: dict[str, Any]
) -> None:
    reply = await asker(client, user("Were there any cars today?"), tools=TOOLS, extra_body=extra)
    assert reply.calls == [model.SEARCH_CALL]
    assert (reply.content, reply.finish_reason) == ("", "tool_calls")
    assert len(reply.call_ids) == 1 and reply.call_ids[0]


@ASKERS
async def test_two_tool_calls_in_one_turn(client: openai.AsyncOpenAI, asker: Asker) -> None:
    reply = await asker(client, user("What is happening everywhere?"), tools=TOOLS)
    assert reply.calls == list(model.TWO_CALLS)
    assert reply.finish_reason == "tool_calls"
    assert len(set(reply.call_ids)) == 2


@ASKERS
async def test_reasoning_then_answer(client: openai.AsyncOpenAI, asker: Asker) -> None:
    reply = await asker(client, user("Ponder whether the garage is shut."))
    assert (reply.reasoning, reply.content) == (model.THINK_REASONING, model.THINK_ANSWER)
    assert reply.finish_reason == "stop"


@ASKERS
async def test_thinking_disabled_skips_the_reasoning(
    client: openai.AsyncOpenAI, asker: Asker
) -> None:
    reply = await asker(client, user("Ponder whether the garage is shut."), extra_body=NO_THINKING)
    assert (reply.reasoning, reply.content) == ("", model.THINK_ANSWER)


@pytest.mark.parametrize(("effort", "thinks"), [("none", False), ("low", True), ("high", True)])
async def test_reasoning_effort(client: openai.AsyncOpenAI, effort: str, thinks: bool) -> None:
    # llama.cpp turns reasoning_effort "none" into enable_thinking=false for the template
    reply = await ask(client, user("Ponder whether the garage is shut."), reasoning_effort=effort)
    assert reply.reasoning == (model.THINK_REASONING if thinks else "")
    assert reply.content == model.THINK_ANSWER


@ASKERS
async def test_max_tokens_inside_the_think_block(client: openai.AsyncOpenAI, asker: Asker) -> None:
    reply = await asker(client, user("Ponder whether the garage is shut."), max_tokens=4)
    assert (reply.reasoning, reply.content, reply.finish_reason) == ("The sensor log", "", "length")


def after_tools(
    question: str, calls: tuple[tuple[str, dict[str, Any]], ...]
) -> list[dict[str, Any]]:
    """A conversation that ends in the results of ``calls``."""
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(calls)
    ]
    results = [
        {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"count": 1})}
        for i in range(len(calls))
    ]
    return [
        *user(question),
        {"role": "assistant", "content": "", "tool_calls": tool_calls},
        *results,
    ]


@ASKERS
async def test_answer_after_a_tool_result(client: openai.AsyncOpenAI, asker: Asker) -> None:
    messages = after_tools("Were there any cars today?", (model.SEARCH_CALL,))
    reply = await asker(client, messages, tools=TOOLS)
    assert (reply.content, reply.calls, reply.finish_reason) == (
        model.AFTER_SEARCH_ANSWER,
        [],
        "stop",
    )
    messages = after_tools("What is happening everywhere?", model.TWO_CALLS)
    reply = await asker(client, messages, tools=TOOLS, extra_body=NO_THINKING)
    assert (reply.content, reply.calls) == (model.AFTER_TWO_CALLS_ANSWER, [])


async def test_the_latest_trigger_wins(client: openai.AsyncOpenAI) -> None:
    messages = [
        *after_tools("Were there any cars today?", (model.SEARCH_CALL,)),
        {"role": "assistant", "content": model.AFTER_SEARCH_ANSWER},
        *user("And is the gravel path clear?"),
    ]
    assert (await ask(client, messages, tools=TOOLS)).content == model.PLAIN_ANSWER


@pytest.mark.parametrize("pad", [100, 6000])  # "x " is two tokens
async def test_the_latest_trigger_wins_far_into_the_context(
    client: openai.AsyncOpenAI, pad: int
) -> None:
    # needs f32 keys and no flash attention (server.DEFAULT_ARGS): with either, triggers
    # a few tokens apart past ~12k positions come out in the wrong order
    messages = [{"role": "system", "content": "x " * pad}, *user("cars y y y gravel?")]
    assert (await ask(client, messages)).content == model.PLAIN_ANSWER


@ASKERS
@pytest.mark.parametrize("fmt", [None, VERDICT_FORMAT], ids=["free", "json_schema"])
@pytest.mark.parametrize(
    ("word", "verdict"), [("giraffe", model.VERDICT_MET), ("unicorn", model.VERDICT_NOT_MET)]
)
async def test_watch_verdict(
    client: openai.AsyncOpenAI, asker: Asker, fmt: Any, word: str, verdict: dict[str, Any]
) -> None:
    messages = [
        {"role": "system", "content": f"Tell the user as soon as a {word} is in the garden."},
        *user("Frame taken 10:00. Tracked objects: person, car."),
    ]
    kw: dict[str, Any] = {"extra_body": NO_THINKING}
    if fmt is not None:
        kw["response_format"] = fmt
    reply = await asker(client, messages, **kw)
    assert json.loads(reply.content) == verdict


async def test_long_answer_stops_at_max_tokens(client: openai.AsyncOpenAI) -> None:
    reply = await ask_streamed(
        client, user("Count forever"), max_tokens=250, stream_options={"include_usage": True}
    )
    assert reply.finish_reason == "length"
    assert reply.content.startswith("Tick tock tick tock")
    assert reply.usage.completion_tokens == 250 and reply.deltas >= 250


async def test_generation_stops_when_the_context_is_full(
    make_llama_server: Callable[..., LlamaServer],
) -> None:
    server = make_llama_server(parallel=1, ctx_size=256)
    async with connect(server) as c:
        reply = await ask_streamed(c, user("Count forever"), stream_options={"include_usage": True})
    assert reply.finish_reason == "length"
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens == 256


async def test_killed_mid_stream(make_llama_server: Callable[..., LlamaServer]) -> None:
    server = make_llama_server(parallel=1, ctx_size=8192)
    async with connect(server) as c:
        stream = await c.chat.completions.create(
            model="any", messages=user("Count forever"), stream=True, temperature=0
        )
        got = 0

        async def read_until_killed() -> None:
            nonlocal got
            async for chunk in stream:
                got += bool(chunk.choices and chunk.choices[0].delta.content)
                if got == 20:
                    server.kill()

        with pytest.raises(openai.APIError):
            await read_until_killed()
        assert got >= 20
    server.start()  # comes back on the same port
    assert server.health() == 200


async def test_restart_keeps_the_port(make_llama_server: Callable[..., LlamaServer]) -> None:
    server = make_llama_server(parallel=1, ctx_size=2048)
    port = server.port
    server.restart()
    assert server.port == port and server.health() == 200
    async with connect(server) as c:
        assert (await ask(c, user("gravel?"))).content == model.PLAIN_ANSWER


async def test_api_key(make_llama_server: Callable[..., LlamaServer]) -> None:
    server = make_llama_server(parallel=1, ctx_size=2048, api_key="right")
    async with connect(server, "wrong") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await ask(c, user("gravel?"))
    assert info.value.status_code == 401
    assert info.value.body == {
        "message": "Invalid API Key",
        "type": "authentication_error",
        "code": 401,
    }
    async with connect(server, "right") as c:
        assert (await ask(c, user("gravel?"))).content == model.PLAIN_ANSWER


async def test_prompt_longer_than_the_context(
    make_llama_server: Callable[..., LlamaServer],
) -> None:
    server = make_llama_server(parallel=1, ctx_size=256)
    async with connect(server) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await ask(c, user("gravel " * 300))
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "exceed_context_size_error"
    assert info.value.body["n_ctx"] == 256 and info.value.body["n_prompt_tokens"] > 256


async def test_image_without_a_projector(client: openai.AsyncOpenAI) -> None:
    png = base64.b64encode(bytes.fromhex("89504e470d0a1a0a")).decode()
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    with pytest.raises(openai.InternalServerError) as info:
        await ask(client, [{"role": "user", "content": content}])
    assert info.value.status_code == 500
    assert isinstance(info.value.body, dict)
    assert "image input is not supported" in info.value.body["message"]


async def test_concurrent_requests(client: openai.AsyncOpenAI) -> None:
    replies = await asyncio.gather(
        ask(client, user("gravel?")),
        ask(client, user("Ponder it")),
        ask(client, user("cars?"), tools=TOOLS),
    )
    assert [r.content for r in replies[:2]] == [model.PLAIN_ANSWER, model.THINK_ANSWER]
    assert replies[2].calls == [model.SEARCH_CALL]


def post(server: LlamaServer, path: str, body: dict[str, Any]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_tokenizer(llama_server: LlamaServer) -> None:
    for word in model.TRIGGERS.values():
        for variant in model.trigger_variants(word):
            tokens = post(llama_server, "/tokenize", {"content": variant})["tokens"]
            assert len(tokens) == 1, (variant, tokens)
    text = "Ünïcode ✓ 🦒 and\ttabs\n\n{json: [1, 2]} <think>x</think>"
    tokens = post(llama_server, "/tokenize", {"content": text, "parse_special": True})["tokens"]
    assert post(llama_server, "/detokenize", {"tokens": tokens})["content"] == text


def image_part(width: int = 64, height: int = 48) -> dict[str, Any]:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    url = "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture
async def vision_client(llama_vision_server: LlamaServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with connect(llama_vision_server) as c:
        yield c


@ASKERS
async def test_images_with_the_projector(vision_client: openai.AsyncOpenAI, asker: Asker) -> None:
    # image patches embed as neutral positions: the text alone decides the answer
    content = [{"type": "text", "text": "Is the gravel path clear?"}, image_part()]
    reply = await asker(vision_client, [{"role": "user", "content": content}])
    assert reply.content == model.PLAIN_ANSWER
    content = [{"type": "text", "text": "What is in this picture?"}, image_part(640, 480)]
    reply = await asker(vision_client, [{"role": "user", "content": content}])
    assert reply.content == model.DEFAULT_ANSWER


async def test_watch_verdict_on_a_frame(vision_client: openai.AsyncOpenAI) -> None:
    messages = [
        {"role": "system", "content": "Tell the user as soon as a giraffe is in the garden."},
        {"role": "user", "content": [image_part(), {"type": "text", "text": "Frame taken 10:00."}]},
    ]
    reply = await ask(
        vision_client, messages, response_format=VERDICT_FORMAT, extra_body=NO_THINKING
    )
    assert json.loads(reply.content) == model.VERDICT_MET


def test_streamed_responses_close_the_connection(llama_server: LlamaServer) -> None:
    """Pinned server behaviour, not a wish: see ``connect``.

    The stream's chunk provider in tools/server/server-http.cpp returns false after the
    last chunk, which cpp-httplib treats as a failed write and so closes the connection.
    A non-streamed response keeps it open.
    """
    body = json.dumps({"messages": user("gravel?"), "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", llama_server.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.getheader("Keep-Alive") == "timeout=5, max=100"
    assert resp.read().endswith(b"data: [DONE]\n\n")
    assert conn.sock is not None
    assert conn.sock.recv(1) == b""  # EOF: the server hung up
    conn.close()


@pytest.mark.parametrize("temperature", [None, 1.0], ids=["server-default", "hot"])
async def test_sampling_settings_do_not_matter(
    client: openai.AsyncOpenAI, temperature: float | None
) -> None:
    # the scripted token leads every other by ~45 logits: any sampler picks it
    kw: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
    for _ in range(3):
        reply = await client.chat.completions.create(
            model="any", messages=user("Ponder whether the garage is shut."), **kw
        )
        assert reply.choices[0].message.content == model.THINK_ANSWER
        reply = await client.chat.completions.create(
            model="any", messages=user("cars?"), tools=TOOLS, seed=7, **kw
        )
        call = (reply.choices[0].message.tool_calls or [])[0]
        assert (call.function.name, json.loads(call.function.arguments)) == model.SEARCH_CALL

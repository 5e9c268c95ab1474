"""The LLM layer through the real ``openai`` SDK against the fake server over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.llm import (
    ContentDelta,
    LlmError,
    LlmErrorCode,
    Provider,
    Providers,
    ReasoningDelta,
    TurnEnd,
    TurnEvent,
    Usage,
    complete,
    stream_turn,
)
from service.llm.thinktags import ThinkTagSplitter
from service.settings import LlmSettings
from tests import fake_llm as f
from tests.broker import REPO

USER = [{"role": "user", "content": "Is anyone at the front door?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_objects",
            "description": "Search tracked objects",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}},
        },
    }
]
CALLS = [("search_objects", {"label": "person"}), ("get_camera_frame", {"camera": "front_door"})]


async def collect(provider: Provider, **kwargs: Any) -> list[TurnEvent]:
    messages = kwargs.pop("messages", USER)
    async with aclosing(stream_turn(provider, messages, **kwargs)) as events:
        return [event async for event in events]


async def fail(provider: Provider, **kwargs: Any) -> tuple[LlmError, list[TurnEvent]]:
    """Run a turn that must fail; return the error and the events given before it."""
    seen: list[TurnEvent] = []
    messages = kwargs.pop("messages", USER)

    async def drain() -> None:
        async with aclosing(stream_turn(provider, messages, **kwargs)) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(LlmError) as info:
        await drain()
    return info.value, seen


# ------------------------------------------------------------------------ happy paths


async def test_text_stream_events_and_request_shape(fake, make_provider):
    fake.push(f.text("Nobody is there.", chunk_size=3, usage=(42, 5)))
    events = await collect(make_provider())
    deltas = [e.text for e in events if isinstance(e, ContentDelta)]
    assert "".join(deltas) == "Nobody is there."
    assert len(deltas) > 1
    assert Usage(42, 5) in events
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert sum(isinstance(e, TurnEnd) for e in events) == 1
    assert (end.content, end.finish_reason, end.tool_calls, end.attempts) == (
        "Nobody is there.",
        "stop",
        [],
        1,
    )
    assert end.usage == Usage(42, 5)
    assert end.first_token_ms is not None
    assert end.total_ms >= end.first_token_ms
    assert end.assistant_message() == {"role": "assistant", "content": "Nobody is there."}
    [req] = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "qwen3-vl"
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.body["messages"] == USER
    assert "tools" not in req.body
    assert "tool_choice" not in req.body
    assert req.headers["authorization"] == "Bearer sk-test-secret-1234"


async def test_tools_are_sent_with_tool_choice_auto(fake, make_provider):
    fake.push(f.text("ok"))
    await collect(make_provider(), tools=TOOLS)
    [req] = fake.requests
    assert req.body["tools"] == TOOLS
    assert req.body["tool_choice"] == "auto"


@pytest.mark.parametrize("style", f.TOOL_STYLES)
async def test_tool_call_styles_through_the_sdk(fake, make_provider, style):
    fake.push(f.tool_calls(CALLS, style=style, content="Let me look. "))
    events = await collect(make_provider(), tools=TOOLS)
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert end.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in end.tool_calls] == [
        ("search_objects", {"label": "person"}),
        ("get_camera_frame", {"camera": "front_door"}),
    ]
    assert len({c.id for c in end.tool_calls}) == 2
    assert end.content == "Let me look. "
    message = end.assistant_message()
    assert [tc["function"]["name"] for tc in message["tool_calls"]] == [
        "search_objects",
        "get_camera_frame",
    ]


async def test_gemini_stop_with_calls_is_a_tool_turn_and_signature_round_trips(fake, make_provider):
    signature = {"google": {"thought_signature": "Q2lRQnlqbnQ="}}
    fake.push(
        f.tool_calls(
            [
                {
                    "name": "search_objects",
                    "arguments": {"label": "car"},
                    "extra": {"extra_content": signature},
                }
            ],
            style="gemini_no_index",
            finish_reason="stop",
        ),
        f.text("A red car."),
    )
    provider = make_provider()
    first = await complete(provider, USER, tools=TOOLS)
    assert first.finish_reason == "tool_calls"
    [call] = first.tool_calls
    assert call.extra == {"extra_content": signature}
    history = [
        *USER,
        first.assistant_message(),
        {"role": "tool", "tool_call_id": call.id, "content": '{"events": []}'},
    ]
    second = await complete(provider, history, tools=TOOLS)
    assert second.content == "A red car."
    replayed = fake.requests[1].body["messages"][1]["tool_calls"][0]
    assert replayed == {
        "id": "search_objects",
        "type": "function",
        "function": {"name": "search_objects", "arguments": '{"label": "car"}'},
        "extra_content": signature,
    }


@pytest.mark.parametrize("field_name", ["reasoning_content", "reasoning"])
async def test_reasoning_under_both_field_names(fake, make_provider, field_name):
    fake.push(f.reasoning("The porch is empty.", "No one.", field_name=field_name))
    events = await collect(make_provider())
    thought = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert thought == "The porch is empty."
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert (end.reasoning, end.content) == ("The porch is empty.", "No one.")
    assert "reasoning" not in json.dumps(end.assistant_message())


async def test_usage_chunk_without_choices(fake, make_provider):
    fake.push(f.stream(f.delta({"content": "hi"}), f.delta({}, "stop"), f.usage_step(7, 1)))
    events = await collect(make_provider())
    assert [type(e).__name__ for e in events] == ["ContentDelta", "Usage", "TurnEnd"]
    assert events[-1].usage == Usage(7, 1)


async def test_choices_null_and_model_recorded(fake, make_provider):
    fake.push(
        f.stream(
            {
                "op": "chunk",
                "data": {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "model": "m2",
                    "choices": None,
                },
            },
            f.delta({"content": "hi"}, "stop"),
        )
    )
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, TurnEnd)
    assert (end.content, end.model) == ("hi", "m2")


async def test_complete_returns_the_end(fake, make_provider):
    fake.push(f.text('{"match": true}'))
    end = await complete(make_provider(), USER, response_format={"type": "json_object"})
    assert end.content == '{"match": true}'
    assert fake.requests[0].body["response_format"] == {"type": "json_object"}


async def test_early_close_releases_the_stream(fake, make_provider):
    provider = make_provider()
    fake.push(f.slow_tokens(50, 0.01), f.text("next"))
    async with aclosing(stream_turn(provider, USER)) as events:
        async for event in events:
            if isinstance(event, ContentDelta):
                break
    end = await complete(provider, USER)
    assert end.content == "next"


# ------------------------------------------------------------------- request options


SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "schema": {"type": "object"}, "strict": True},
}


async def test_json_schema_sent_only_when_supported(fake, make_provider):
    fake.push(f.text("{}"), f.text("{}"))
    await complete(make_provider(), USER, response_format=SCHEMA)
    await complete(make_provider(json_schema=False), USER, response_format=SCHEMA)
    assert fake.requests[0].body["response_format"] == SCHEMA
    assert "response_format" not in fake.requests[1].body


async def test_rejected_response_format_is_dropped_and_remembered(fake, make_provider):
    provider = make_provider()
    fake.push(
        f.error(400, "Either json_schema or grammar can be specified, but not both"),
        f.text("{}"),
        f.text("{}"),
    )
    end = await complete(provider, USER, response_format=SCHEMA)
    assert end.content == "{}"
    await complete(provider, USER, response_format=SCHEMA)
    bodies = [r.body for r in fake.requests]
    assert ["response_format" in b for b in bodies] == [True, False, False]


async def test_rejected_stream_options_is_dropped_and_remembered(fake, make_provider):
    provider = make_provider()
    fake.push(
        f.error(400, "Unrecognized request argument supplied: stream_options"),
        f.text("a"),
        f.text("b"),
    )
    assert (await complete(provider, USER)).content == "a"
    assert (await complete(provider, USER)).content == "b"
    assert ["stream_options" in r.body for r in fake.requests] == [True, False, False]


@pytest.mark.parametrize(
    ("control", "enable", "extra_body", "expected"),
    [
        ("chat_template_kwargs", True, {}, {"chat_template_kwargs": {"enable_thinking": True}}),
        (
            "chat_template_kwargs",
            False,
            {"chat_template_kwargs": {"keep": 1}, "top_k": 20},
            {"chat_template_kwargs": {"keep": 1, "enable_thinking": False}, "top_k": 20},
        ),
        ("think", True, {}, {"think": True}),
        ("think", False, {}, {"think": False}),
        ("reasoning_effort", True, {}, {"reasoning_effort": "medium"}),
        ("reasoning_effort", True, {"reasoning_effort": "high"}, {"reasoning_effort": "high"}),
        ("reasoning_effort", False, {"reasoning_effort": "high"}, {"reasoning_effort": "none"}),
        ("none", True, {}, {}),
        ("chat_template_kwargs", None, {}, {}),
        ("think", None, {"num_ctx": 8192}, {"num_ctx": 8192}),
    ],
)
async def test_enable_thinking_mapping(fake, make_provider, control, enable, extra_body, expected):
    fake.push(f.text("ok"))
    await collect(
        make_provider(thinking_control=control, extra_body=extra_body), enable_thinking=enable
    )
    body = fake.requests[0].body
    standard = {"model", "messages", "stream", "stream_options"}
    assert {k: v for k, v in body.items() if k not in standard} == expected


async def test_custom_headers_and_no_key(fake, make_provider):
    fake.push(f.text("ok"))
    await collect(make_provider(api_key=None, headers={"X-Tenant": "home"}))
    headers = fake.requests[0].headers
    assert headers["x-tenant"] == "home"
    assert headers["authorization"] == "Bearer unused"


@pytest.mark.parametrize("version_in_url", [False, True])
async def test_azure_deployment_path_and_key_header(fake, make_provider, version_in_url):
    fake.push(f.text("hello from azure"))
    if version_in_url:
        provider = make_provider(
            kind="azure", base_url=f"{fake.url}/?api-version=2024-10-21", model="gpt4o-dep"
        )
    else:
        provider = make_provider(
            kind="azure", base_url=fake.url, api_version="2024-10-21", model="gpt4o-dep"
        )
    end = await complete(provider, USER)
    assert end.content == "hello from azure"
    [req] = fake.requests
    assert req.path == "/openai/deployments/gpt4o-dep/chat/completions"
    assert req.query["api-version"] == "2024-10-21"
    assert req.headers["api-key"] == "sk-test-secret-1234"


async def test_azure_without_api_version_is_a_clear_error(make_provider):
    provider = make_provider(kind="azure", base_url="http://127.0.0.1:9")
    err, _ = await fail(provider)
    assert err.code is LlmErrorCode.ERROR
    assert "api_version" in err.message


# ----------------------------------------------------------------------------- errors


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection_is_unavailable(make_provider):
    provider = make_provider(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=1)
    err, seen = await fail(provider)
    assert err.code is LlmErrorCode.UNAVAILABLE
    assert err.retryable
    assert "after 2 attempts" in err.message
    assert seen == []


async def test_connection_dropped_before_response_is_retried_then_unavailable(fake, make_provider):
    fake.push(f.refuse(), f.refuse(), f.refuse(), f.text("unused"))
    err, _ = await fail(make_provider(max_retries=2))
    assert err.code is LlmErrorCode.UNAVAILABLE
    assert len(fake.requests) == 3
    assert fake.pending == 1


async def test_hang_before_first_byte_times_out(fake, make_provider):
    fake.push(f.hang(), f.text("unused"))
    err, seen = await fail(make_provider(timeout_s=0.3))
    assert err.code is LlmErrorCode.TIMEOUT
    assert "sent nothing for 0.3 s" in err.message
    assert seen == []
    assert len(fake.requests) == 1  # timeouts are not retried


async def test_hang_mid_stream_times_out_after_partial_text(fake, make_provider):
    fake.push(f.hang_mid_stream("The porch"))
    err, seen = await fail(make_provider(timeout_s=0.3))
    assert err.code is LlmErrorCode.TIMEOUT
    assert "mid-answer" in err.message
    assert "".join(e.text for e in seen if isinstance(e, ContentDelta)) == "The porch"


async def test_turn_deadline(fake, make_provider):
    # Each gap (0.02 s) is far below timeout_s; only the whole-turn deadline can end it.
    fake.push(f.slow_tokens(500, 0.02))
    err, seen = await fail(make_provider(timeout_s=5.0), deadline_s=0.5)
    assert err.code is LlmErrorCode.TIMEOUT
    assert "deadline of 0.5 s" in err.message
    assert any(isinstance(e, ContentDelta) for e in seen)


async def test_429_with_retry_after_is_retried_and_honoured(fake, make_provider):
    fake.push(
        f.error(429, "Rate limit reached", headers={"Retry-After": "0.2"}), f.text("after the wait")
    )
    end = await complete(make_provider(max_retries=1), USER)
    assert end.content == "after the wait"
    assert end.attempts == 2
    first, second = fake.requests
    assert second.received_at - first.received_at >= 0.15


async def test_retry_after_beyond_the_cap_is_not_waited_for(fake, make_provider):
    fake.push(f.error(429, "Slow down", headers={"Retry-After": "3600"}), f.text("unused"))
    err, _ = await fail(make_provider())
    assert (err.code, err.status, err.retryable) == (LlmErrorCode.UNAVAILABLE, 429, True)
    assert len(fake.requests) == 1


async def test_insufficient_quota_is_not_retried(fake, make_provider):
    fake.push(
        f.error(429, "You exceeded your current quota", code="insufficient_quota"), f.text("unused")
    )
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.UNAVAILABLE
    assert not err.retryable
    assert len(fake.requests) == 1


async def test_500s_exhaust_retries_then_unavailable(fake, make_provider):
    fake.push(*[f.error(500, "Internal error")] * 3, f.text("unused"))
    err, _ = await fail(make_provider(max_retries=2))
    assert (err.code, err.status) == (LlmErrorCode.UNAVAILABLE, 500)
    assert "after 3 attempts" in err.message
    assert len(fake.requests) == 3


async def test_503_then_success(fake, make_provider):
    fake.push(f.error(503, "loading model"), f.text("ready"))
    end = await complete(make_provider(), USER)
    assert (end.content, end.attempts) == ("ready", 2)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_not_retried_and_hides_the_key(fake, make_provider, status):
    fake.push(f.error(status, "Incorrect API key provided: sk-test-secret-1234"), f.text("unused"))
    err, _ = await fail(make_provider())
    assert (err.code, err.status, err.retryable) == (LlmErrorCode.AUTH, status, False)
    assert "sk-test" not in err.message
    assert "sk-test" not in str(err)
    assert len(fake.requests) == 1


async def test_key_echoed_in_other_errors_is_scrubbed(fake, make_provider):
    fake.push(f.error(400, "bad request from key sk-test-secret-1234"))
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.ERROR
    assert "sk-test-secret-1234" not in err.message
    assert "***" in err.message


@pytest.mark.parametrize("flavour", sorted(f.CONTEXT_OVERFLOW_BODIES))
async def test_context_overflow(fake, make_provider, flavour):
    fake.push(f.context_overflow(flavour), f.text("unused"))
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.CONTEXT_OVERFLOW
    assert not err.retryable
    assert len(fake.requests) == 1


async def test_context_overflow_reported_inside_the_stream(fake, make_provider):
    fake.push(f.stream_error("prompt is too long: 9000 tokens > 8192 maximum", code=400))
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.CONTEXT_OVERFLOW


async def test_404_names_the_model(fake, make_provider):
    fake.push(f.error(404, "model 'qwen3-vl' not found"))
    err, _ = await fail(make_provider())
    assert (err.code, err.status) == (LlmErrorCode.ERROR, 404)
    assert "qwen3-vl" in err.message


async def test_truncated_stream_after_text_is_an_error_without_replay(fake, make_provider):
    # Decision: a body cut mid-answer is llm_error (the server did answer, then broke);
    # retryable for a later attempt, but never replayed inside the turn.
    fake.push(f.truncated("Someone is"), f.text("unused"))
    err, seen = await fail(make_provider())
    assert err.code is LlmErrorCode.ERROR
    assert err.retryable
    assert "".join(e.text for e in seen if isinstance(e, ContentDelta)) == "Someone is"
    assert len(fake.requests) == 1
    assert fake.pending == 1


async def test_stream_ended_without_finish_is_an_error(fake, make_provider):
    fake.push(f.ended_early("Someone is"))
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.ERROR
    assert "before the answer was finished" in err.message


async def test_cut_before_anything_was_given_is_retried(fake, make_provider):
    fake.push(f.truncated(""), f.text("second try"))
    end = await complete(make_provider(), USER)
    assert (end.content, end.attempts) == ("second try", 2)


async def test_empty_answer_is_retried_then_unavailable(fake, make_provider):
    fake.push(f.stream(done=False), f.stream(done=False))
    err, _ = await fail(make_provider(max_retries=1))
    assert err.code is LlmErrorCode.UNAVAILABLE
    assert len(fake.requests) == 2


async def test_invalid_json_chunk_is_an_error(fake, make_provider):
    fake.push(f.invalid_json("ab"), f.text("unused"))
    err, _ = await fail(make_provider())
    assert err.code is LlmErrorCode.ERROR
    assert not err.retryable
    assert "malformed" in err.message
    assert len(fake.requests) == 1


async def test_error_event_in_stream_after_text(fake, make_provider):
    fake.push(f.stream_error("CUDA out of memory", code=500, prefix="Hmm"), f.text("unused"))
    err, seen = await fail(make_provider())
    assert err.code is LlmErrorCode.UNAVAILABLE
    assert seen
    assert len(fake.requests) == 1


# -------------------------------------------------------------------------- registry


def llm_settings(**providers: dict[str, Any]) -> LlmSettings:
    return LlmSettings.model_validate({"providers": providers})


def test_registry_single_provider_holds_both_roles():
    providers = Providers(llm_settings(main={"model": "qwen3-vl"}))
    assert providers.chat is providers.vision is providers.by_name["main"]
    assert providers.same_for_chat_and_vision


def test_registry_split_providers():
    providers = Providers(
        llm_settings(
            talk={"model": "qwen3", "roles": ["chat"], "supports_vision": False},
            eyes={"model": "qwen3-vl", "roles": ["vision"]},
        )
    )
    assert providers.require_chat().name == "talk"
    assert providers.require_vision().name == "eyes"
    assert not providers.same_for_chat_and_vision


def test_registry_text_only_chat_has_no_vision():
    providers = Providers(
        llm_settings(talk={"model": "qwen3", "roles": ["chat"], "supports_vision": False})
    )
    assert providers.vision is None
    assert not providers.same_for_chat_and_vision
    with pytest.raises(LlmError) as info:
        providers.require_vision()
    assert info.value.code is LlmErrorCode.UNAVAILABLE


def test_registry_empty():
    providers = Providers(LlmSettings())
    assert providers.chat is None
    with pytest.raises(LlmError) as info:
        providers.require_chat()
    assert info.value.code is LlmErrorCode.UNAVAILABLE


async def test_describe_image_uses_the_vision_provider(fake):
    providers = Providers(
        llm_settings(
            talk={"model": "text-model", "roles": ["chat"], "base_url": "http://127.0.0.1:9/v1"},
            eyes={"model": "vision-model", "roles": ["vision"], "base_url": fake.base_url},
        ),
        retry_base_s=0.01,
    )
    fake.push(f.text("  A person in a red jacket stands at the door.  "))
    data_url = "data:image/jpeg;base64,/9j/4AAQSkZJRg=="
    try:
        text = await providers.describe_image(
            data_url,
            "person (front_door, porch zone) since 12:01:05",
            question="who is at the door?",
        )
    finally:
        await providers.aclose()
    assert text == "A person in a red jacket stands at the door."
    [req] = fake.requests
    assert req.body["model"] == "vision-model"
    system, user = req.body["messages"]
    assert system["role"] == "system"
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": data_url}}
    assert "person (front_door, porch zone)" in user["content"][0]["text"]
    assert "who is at the door?" in user["content"][0]["text"]
    assert req.body["chat_template_kwargs"] == {"enable_thinking": False}


async def test_describe_image_empty_answer_is_an_error(fake):
    providers = Providers(llm_settings(eyes={"model": "vision-model", "base_url": fake.base_url}))
    fake.push(f.text(""))
    try:
        with pytest.raises(LlmError) as info:
            await providers.describe_image("data:image/jpeg;base64,AA==", "")
    finally:
        await providers.aclose()
    assert info.value.code is LlmErrorCode.ERROR


# ---------------------------------------------------------------------- start-up cost


def test_importing_the_llm_layer_does_not_import_openai():
    code = "import sys, service.llm.roles; assert 'openai' not in sys.modules, 'openai imported eagerly'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------- <think> in content


def split_all(text: str, size: int) -> tuple[str, str]:
    splitter = ThinkTagSplitter()
    pieces = []
    for start in range(0, len(text), size):
        pieces += splitter.feed(text[start : start + size])
    pieces += splitter.flush()
    reasoning = "".join(t for kind, t in pieces if kind == "reasoning")
    content = "".join(t for kind, t in pieces if kind == "content")
    return reasoning, content


@settings(max_examples=80, deadline=None)
@given(
    thought=st.text(max_size=40).filter(lambda t: "</think>" not in t),
    answer=st.text(max_size=40).map(str.lstrip),
    lead=st.sampled_from(["", " ", "\n"]),
    size=st.integers(min_value=1, max_value=12),
)
def test_think_tags_split_under_any_chunking(thought, answer, lead, size):
    assert split_all(f"{lead}<think>{thought}</think>\n\n{answer}", size) == (thought, answer)


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=60), size=st.integers(min_value=1, max_value=12))
def test_text_without_a_leading_think_tag_is_untouched(text, size):
    assume(not text.lstrip().startswith("<think>"))
    assert split_all(text, size) == ("", text)


def test_unterminated_think_is_reasoning():
    assert split_all("<think>still pondering", 3) == ("still pondering", "")


async def test_think_tags_in_content_become_reasoning(fake, make_provider):
    fake.push(
        f.text("<think>Check the porch camera.</think>\n\nNobody is at the door.", chunk_size=3)
    )
    events = await collect(make_provider())
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert end.reasoning == "Check the porch camera."
    assert end.content == "Nobody is at the door."
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == end.content
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == end.reasoning


# ------------------------------------------------------------------- SSE framing


async def sse_payloads(body: bytes, cuts: list[int]) -> list[Any]:
    """What ``sse_chunks`` makes of ``body`` arriving in reads cut at ``cuts``."""
    import httpx2

    from service.llm.sse import sse_chunks

    class _Chunks(httpx2.AsyncByteStream):
        def __init__(self, pieces: list[bytes]) -> None:
            self.pieces = pieces

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for piece in self.pieces:
                yield piece

    bounds = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    response = httpx2.Response(200, stream=_Chunks(pieces), request=request)
    async with aclosing(sse_chunks(response)) as chunks:
        return [chunk async for chunk in chunks]


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(max_size=8), min_size=1, max_size=4),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
async def test_sse_events_survive_any_line_ending_and_any_read_boundary(texts, eol, cuts):
    # A comment, a multi-line data field and an unknown field in the mix, as servers send.
    events = [b": keep-alive" + eol + eol]
    for text in texts:
        value = json.dumps({"choices": [{"delta": {"content": text}}]}).encode()
        head, tail = value[:10], value[10:]
        events.append(b"event: chunk" + eol + b"data: " + head + eol + b"data:" + tail + eol + eol)
    body = b"".join(events) + b"data: [DONE]" + eol + eol
    from service.llm.sse import DONE

    payloads = await sse_payloads(body, cuts)
    assert payloads[-1] == DONE  # a finished stream says so; a cut one does not
    # The two data lines of each event are joined with a newline: JSON does not mind.
    assert [p["choices"][0]["delta"]["content"] for p in payloads[:-1]] == texts


async def test_sse_event_left_unterminated_is_dropped():
    body = b'data: {"a": 1}\n\ndata: {"a": 2}\n'
    assert await sse_payloads(body, [5, 17]) == [{"a": 1}]


# ------------------------------------------------------------------- proxies


async def test_http_proxy_from_the_environment_is_honoured(make_provider, monkeypatch):
    """``HTTP_PROXY`` sends the request through the proxy, on either transport."""
    first_lines: list[bytes] = []
    sse = (
        b'data: {"choices":[{"index":0,"delta":{"content":"via proxy"},"finish_reason":null}]}'
        b'\n\ndata: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
        b"\n\ndata: [DONE]\n\n"
    )

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        first_lines.append(head.split(b"\r\n")[0])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        # Answers itself rather than forwarding: what matters is that it was asked.
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(sse), sse)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        provider = make_provider(base_url="http://model.invalid:9/v1", max_retries=0)
        end = await complete(provider, USER)
    assert end.content == "via proxy"
    assert first_lines == [b"POST http://model.invalid:9/v1/chat/completions HTTP/1.1"]

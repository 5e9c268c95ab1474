"""What real servers answer, replayed by the fake server through the real SDK.

The llama.cpp answers are its own recordings (tests/peers/llamacpp/recordings, written
by the real server); the hosted APIs' answers follow their documented and observed
error texts (see the README's provider table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tests.fake_llm as f
from service.llm import LlmErrorCode, TurnEnd, complete
from service.llm.provider import server_kind
from service.settings import ProviderSettings
from tests.unit.llm.test_llm import USER, collect, fail

RECORDINGS = Path(__file__).resolve().parents[2] / "peers" / "llamacpp" / "recordings"
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is at the door?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
        ],
    }
]


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((RECORDINGS / f"{name}.json").read_text()))


def replay(name: str) -> f.Reply:
    """A recorded llama.cpp answer as the fake server's reply."""
    rec = recorded(name)
    if rec["status"] != 200:
        return f.error(rec["status"], body=rec["body"])
    steps = [{"op": "raw", "text": line + "\n\n"} for line in rec["sse"]]
    return f.Reply(steps=steps)


@pytest.mark.parametrize(
    ("base_url", "kind", "expected"),
    [
        (None, "openai", "openai"),
        ("https://api.openai.com/v1", "openai", "openai"),
        ("https://home.openai.azure.com/?api-version=2025-01-01", "azure", "azure"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "openai", "gemini"),
        ("http://ollama:11434/v1", "openai", "ollama"),
        ("http://192.168.1.5:11434/v1", "openai", "ollama"),
        ("http://localhost:1234/v1", "openai", "lmstudio"),
        ("http://llama-server:8080/v1", "openai", "llamacpp"),
        ("http://vllm.lan:8000/v1", "openai", "vllm"),
        ("http://gpu.lan:9000/v1", "openai", "other"),
    ],
)
def test_the_server_is_guessed_from_its_url(base_url, kind, expected):
    settings = ProviderSettings(model="m", base_url=base_url, kind=kind, api_version="1")
    assert server_kind(settings) == expected


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        ("http://ollama:11434/v1", "reasoning_effort"),
        ("http://llama:8080/v1", "chat_template_kwargs"),
        ("https://api.openai.com/v1", None),
    ],
)
def test_auto_thinking_control_per_server(make_provider, base_url, field):
    provider = make_provider(base_url=base_url)
    body = provider.build_request(USER, enable_thinking=False)
    sent = [k for k in ("reasoning_effort", "chat_template_kwargs", "think") if k in body]
    assert sent == ([field] if field else [])


@pytest.mark.parametrize(
    "refusal",
    [
        # OpenAI, a model without reasoning
        "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        # OpenAI gpt-5 given "none"
        "Unsupported value: 'reasoning_effort' does not support 'none' with this model. "
        "Supported values are: 'minimal', 'low', 'medium', and 'high'.",
        # Ollama, a model without thinking
        '"qwen2.5vl:7b" does not support thinking',
    ],
)
async def test_a_refused_thinking_argument_is_dropped_for_good(fake, make_provider, refusal):
    provider = make_provider(thinking_control="reasoning_effort")
    fake.push(f.error(400, refusal), f.text("first"), f.text("second"))
    assert (await complete(provider, USER, enable_thinking=False)).content == "first"
    assert (await complete(provider, USER, enable_thinking=False)).content == "second"
    assert ["reasoning_effort" in r.body for r in fake.requests] == [True, False, False]


async def test_gemini_refuses_unknown_fields_in_an_array_body(fake, make_provider):
    # Gemini's OpenAI endpoint answers unknown fields with a JSON array, not an object.
    body = [
        {
            "error": {
                "code": 400,
                "message": 'Invalid JSON payload received. Unknown name "chat_template_kwargs": '
                "Cannot find field.",
                "status": "INVALID_ARGUMENT",
            }
        }
    ]
    provider = make_provider(thinking_control="chat_template_kwargs")
    fake.push(f.error(400, body=body), f.text("ok"))
    assert (await complete(provider, USER, enable_thinking=False)).content == "ok"
    assert ["chat_template_kwargs" in r.body for r in fake.requests] == [True, False]


async def test_llama_cpp_refusing_images_is_a_capability_answer(fake, make_provider):
    provider = make_provider(max_retries=2)
    fake.push(replay("error_image_without_mmproj"), f.text("unused"))
    err, _ = await fail(provider, messages=IMAGE)
    assert err.code is LlmErrorCode.NO_IMAGES
    assert "cannot take images" in err.message and "mmproj" in err.message
    assert len(fake.requests) == 1  # never retried
    assert provider.images_rejected and not provider.supports_vision


async def test_a_chat_goes_on_without_the_image(fake, make_provider):
    provider = make_provider()
    fake.push(replay("error_image_without_mmproj"), f.text("I cannot see it, but."))
    events = await collect(provider, messages=IMAGE, images_optional=True)
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.images_dropped
    assert end.content == "I cannot see it, but."
    resent = fake.requests[1].body["messages"][0]["content"]
    assert [p["type"] for p in resent] == ["text", "text"]
    # Remembered: the next request goes without the image at once.
    fake.push(f.text("again"))
    await collect(provider, messages=IMAGE, images_optional=True)
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    "text",
    [
        "Invalid content type. image_url is only supported by certain models.",
        "Qwen/Qwen2.5-7B-Instruct is not a multimodal model",
        "Model does not support images. Please use a model that does.",
    ],
)
async def test_other_servers_refusing_images(fake, make_provider, text):
    fake.push(f.error(400, text))
    err, _ = await fail(make_provider(), messages=IMAGE)
    assert err.code is LlmErrorCode.NO_IMAGES


async def test_done_without_a_finish_reason_is_an_answer(fake, make_provider):
    fake.push(f.stream(f.delta({"content": "All quiet."})))  # [DONE], never a finish_reason
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, TurnEnd) and end.content == "All quiet."
    assert end.finish_reason == "stop"


async def test_a_body_that_just_stops_is_still_cut_short(fake, make_provider):
    fake.push(f.ended_early("All"))
    err, _ = await fail(make_provider(max_retries=0))
    assert err.code is LlmErrorCode.ERROR


async def test_out_of_tokens_inside_thinking_as_llama_cpp_streams_it(fake, make_provider):
    fake.push(replay("stream_length_inside_think"))
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, TurnEnd)
    assert end.finish_reason == "length" and end.content == "" and end.reasoning


async def test_a_tool_call_cut_by_the_token_limit_stays_length(fake, make_provider):
    fake.push(
        f.stream(
            f.delta(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {
                                "name": "set_camera_state",
                                "arguments": '{"camera": "dri',
                            },
                        }
                    ]
                },
                finish_reason="length",
            )
        )
    )
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, TurnEnd) and end.finish_reason == "length" and end.tool_calls


async def test_llama_cpp_tool_call_stream_replays(fake, make_provider):
    fake.push(replay("stream_tool_call"))
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, TurnEnd)
    assert [(c.name, c.arguments) for c in end.tool_calls] == [("search_objects", {"label": "car"})]

"""Record what the real llama-server answers, as JSON fixtures for fake-server tests.

    .venv/bin/python -m tests.peers.llamacpp.record [--out DIR]

Each scenario is sent over plain HTTP (no SDK, so nothing is reinterpreted) and written to
``recordings/<name>.json`` as ``{"description", "server_args", "request", "status",
"headers", "body" | "sse"}``. ``sse`` is the list of non-empty lines of the event stream
exactly as received (``data: {...}`` lines, then ``data: [DONE]``); a longer stream keeps
its first and last five lines and says how many it left out (``sse_omitted``). Ids,
timestamps and timings are the server's own and differ on every run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.llamacpp import build
from tests.peers.llamacpp.model import write_model
from tests.peers.llamacpp.server import LlamaServer

HERE = Path(__file__).parent
MAX_SSE_LINES = 60
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_objects",
            "description": "Search the history of tracked objects.",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}},
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
VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "watch_verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "condition_met": {"type": "boolean"},
                "next_run_in": {"type": "integer", "minimum": 1, "maximum": 300},
                "reasoning": {"type": "string"},
                "notification_message": {"type": "string"},
            },
            "required": ["condition_met", "next_run_in", "reasoning", "notification_message"],
            "additionalProperties": False,
        },
    },
}
WATCH = [
    {"role": "system", "content": "Tell the user as soon as a giraffe is in the garden."},
    {"role": "user", "content": "Frame taken 10:00. Tracked objects: person, car."},
]
NO_THINKING = {"enable_thinking": False}


def tiny_jpeg() -> str:
    """A real 32x32 grey JPEG, base64 (the server decodes images only with a projector)."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@dataclass
class Scenario:
    """One request and what to call its recording."""

    name: str
    description: str
    body: dict[str, Any]
    server: str = "main"
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/v1/chat/completions"


SCENARIOS = [
    Scenario(
        "stream_tool_call",
        "Streamed single tool call (search_objects) with usage; thinking on (default).",
        {
            "messages": user("Were there any cars today?"),
            "tools": TOOLS,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    Scenario(
        "stream_two_tool_calls",
        "Streamed turn with two get_live_context calls.",
        {"messages": user("What is happening everywhere?"), "tools": TOOLS, "stream": True},
    ),
    Scenario(
        "stream_reasoning",
        "Streamed <think> block (reasoning_content deltas) then the answer.",
        {"messages": user("Ponder whether the garage is shut."), "stream": True},
    ),
    Scenario(
        "stream_plain_usage",
        "Streamed plain answer with stream_options.include_usage: the last chunk has usage.",
        {
            "messages": user("Is the gravel path clear?"),
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    Scenario(
        "stream_length_inside_think",
        "max_tokens runs out inside <think>: finish_reason length, only reasoning so far.",
        {"messages": user("Ponder whether the garage is shut."), "stream": True, "max_tokens": 4},
    ),
    Scenario(
        "length_inside_think",
        "Non-streamed: max_tokens runs out inside <think>.",
        {"messages": user("Ponder whether the garage is shut."), "max_tokens": 4},
    ),
    Scenario(
        "thinking_disabled",
        "chat_template_kwargs.enable_thinking=false: the template adds an empty think block.",
        {
            "messages": user("Ponder whether the garage is shut."),
            "chat_template_kwargs": NO_THINKING,
        },
    ),
    Scenario(
        "reasoning_effort_none",
        "reasoning_effort='none' (what lookout sends to switch thinking off that way).",
        {"messages": user("Ponder whether the garage is shut."), "reasoning_effort": "none"},
    ),
    Scenario(
        "reasoning_effort_low",
        "reasoning_effort='low'.",
        {"messages": user("Ponder whether the garage is shut."), "reasoning_effort": "low"},
    ),
    Scenario(
        "answer_after_tool_result",
        "A conversation that ends in a tool result: the model answers, no new call.",
        {
            "messages": [
                *user("Were there any cars today?"),
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_0",
                            "type": "function",
                            "function": {
                                "name": "search_objects",
                                "arguments": '{"label": "car"}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_0", "content": '{"count": 1}'},
            ],
            "tools": TOOLS,
        },
    ),
    Scenario(
        "json_schema_verdict",
        "Watch verdict with a json_schema response_format (grammar-constrained).",
        {
            "messages": WATCH,
            "response_format": VERDICT_FORMAT,
            "chat_template_kwargs": NO_THINKING,
        },
    ),
    Scenario(
        "json_schema_with_tools",
        "json_schema response_format together with tools.",
        {"messages": WATCH, "response_format": VERDICT_FORMAT, "tools": TOOLS},
    ),
    Scenario(
        "json_schema_off_script",
        "json_schema response_format on a prompt whose script is not JSON: the grammar "
        "forces JSON-shaped filler until max_tokens.",
        {
            "messages": user("Is the gravel path clear?"),
            "response_format": VERDICT_FORMAT,
            "max_tokens": 40,
        },
    ),
    Scenario(
        "error_image_without_mmproj",
        "An image part while the server runs without --mmproj.",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/jpeg;base64,{tiny_jpeg()}"},
                        },
                    ],
                }
            ]
        },
    ),
    Scenario(
        "error_context_exceeded",
        "A prompt longer than the slot's context (server started with -c 256).",
        {"messages": user("gravel " * 300)},
        server="small",
    ),
    Scenario(
        "stream_error_context_exceeded",
        "The same, streamed: the error comes before any event.",
        {"messages": user("gravel " * 300), "stream": True},
        server="small",
    ),
    Scenario(
        "stream_context_full_while_generating",
        "Generation that reaches the end of the context (-c 256, no max_tokens).",
        {"messages": user("Count forever"), "stream": True},
        server="small",
    ),
    Scenario(
        "error_wrong_api_key",
        "Server started with --api-key; request with another key.",
        {"messages": user("Is the gravel path clear?")},
        server="keyed",
        headers={"Authorization": "Bearer wrong"},
    ),
    Scenario(
        "error_missing_api_key",
        "Server started with --api-key; request without Authorization.",
        {"messages": user("Is the gravel path clear?")},
        server="keyed",
    ),
]
SERVERS: dict[str, dict[str, Any]] = {
    "main": {"ctx_size": 8192, "parallel": 1},
    "small": {"ctx_size": 256, "parallel": 1},
    "keyed": {"ctx_size": 2048, "parallel": 1, "api_key": "right"},
}


def run(server: LlamaServer, scenario: Scenario) -> dict[str, Any]:
    """Send one scenario and capture the reply verbatim."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Content-Type": "application/json", **scenario.headers}
    conn.request("POST", scenario.path, json.dumps(scenario.body), headers)
    resp = conn.getresponse()
    record: dict[str, Any] = {
        "description": scenario.description,
        "server_args": server.command()[3:],
        "request": scenario.body,
        "status": resp.status,
        "headers": {k.lower(): v for k, v in resp.getheaders() if k.lower() == "content-type"},
    }
    raw = resp.read().decode()
    conn.close()
    if "text/event-stream" in resp.getheader("Content-Type", ""):
        lines = [line for line in raw.split("\n") if line.strip()]
        if len(lines) > MAX_SSE_LINES:  # keep the file small: the ends say it all
            record["sse_omitted"] = len(lines) - 10
            lines = lines[:5] + lines[-5:]
        record["sse"] = lines
    else:
        record["body"] = json.loads(raw) if raw else None
    record["server_args"] = [a for a in record["server_args"] if not a.startswith("/")]
    return record


@contextmanager
def servers(workdir: Path) -> Iterator[dict[str, LlamaServer]]:
    """Every server the scenarios need, started from one model file."""
    model = workdir / "scripted.gguf"
    write_model(model)
    started: dict[str, LlamaServer] = {}
    try:
        for name, kwargs in SERVERS.items():
            log = workdir / f"{name}.log"
            started[name] = LlamaServer(build.server_binary(), model, log, **kwargs)
            started[name].start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def main() -> None:
    """Record every scenario into ``--out`` (default: ``recordings/`` beside this file)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "recordings")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as running:
        for scenario in SCENARIOS:
            record = run(running[scenario.server], scenario)
            path = args.out / f"{scenario.name}.json"
            path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            print(f"{path.name}: {record['status']}")


if __name__ == "__main__":
    main()

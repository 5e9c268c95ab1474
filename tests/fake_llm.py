"""A fake OpenAI-compatible chat-completions server for tests, e2e runs and benchmarks.

It is a real aiohttp server on 127.0.0.1, so the real ``openai`` SDK talks to it over
real HTTP. Use it in-process::

    async with FakeLLM() as fake:
        fake.push(text("hello"), tool_calls([("search_objects", {"label": "person"})]))
        ...  # point a provider at fake.base_url
        [req] = await fake.wait_for_requests(1)

or as a separate process (for e2e runs of ``lookout run``)::

    python -m tests.fake_llm --port 0 --script turns.json --port-file /tmp/port

Control endpoints for the standalone mode: ``POST /_script`` (one reply or a list, in the
JSON form of :class:`Reply`), ``POST /_responder`` (``{"path": "module:callable"}`` or
``{"builtin": "echo"}``, optional ``"args"`` for a factory; ``{}`` clears), ``GET /_requests?wait=N&timeout=S`` (recorded
requests, waiting until at least N arrived), ``POST /_reset`` and ``GET /_health``.

A reply is a list of steps played in order. Steps are plain JSON so a script file or a
``/_script`` call can carry them:

- ``{"op": "delta", "delta": {...}, "finish_reason": null}``: one chunk with one choice;
- ``{"op": "chunk", "data": {...}}``: a chunk sent verbatim;
- ``{"op": "usage", "prompt_tokens": 1, "completion_tokens": 2}``: the usage chunk with
  ``choices: []`` (sent only when the request asked for it, as OpenAI does);
- ``{"op": "sleep", "s": 0.1}``, ``{"op": "hang"}`` (until the client goes away or the
  server stops), ``{"op": "raw", "text": "data: {oops\\n\\n"}``;
- ``{"op": "close"}``: drop the connection mid-body; ``{"op": "eof"}``: end the body
  cleanly without ``[DONE]``; ``{"op": "done"}``: ``data: [DONE]``.

A reply can instead be an HTTP error (``status``/``headers``/``body``) or a fault before
any byte (``fault``: ``"refuse"`` closes the connection, ``"hang"`` never answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import signal
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

Step = dict[str, Any]
ToolSpec = tuple[Any, ...] | dict[str, Any]

DEFAULT_MODEL = "fake-model"


@dataclass
class Reply:
    """One scripted answer to one chat-completions request."""

    steps: list[Step] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "fault": self.fault,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        return cls(
            steps=list(data.get("steps") or []),
            status=int(data.get("status", 200)),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            fault=data.get("fault"),
        )


@dataclass
class RecordedRequest:
    """What the fake server received (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    received_at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.body.get("tools") if isinstance(self.body, dict) else None

    @property
    def last_message(self) -> dict[str, Any] | None:
        messages = self.messages
        return messages[-1] if messages else None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "received_at": self.received_at,
        }


Responder = Callable[[RecordedRequest], "Reply | Awaitable[Reply]"]


# --------------------------------------------------------------------------- builders


def _pieces(text_value: str, size: int) -> list[str]:
    size = max(1, size)
    return [text_value[i : i + size] for i in range(0, len(text_value), size)] or [""]


def delta(payload: dict[str, Any], finish_reason: str | None = None) -> Step:
    """A chunk step carrying one choice with ``payload`` as its delta."""
    return {"op": "delta", "delta": payload, "finish_reason": finish_reason}


def usage_step(prompt_tokens: int, completion_tokens: int) -> Step:
    """The trailing usage chunk (``choices: []``)."""
    return {"op": "usage", "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def _finish(
    steps: list[Step], finish_reason: str | None, usage: tuple[int, int] | None, done: bool = True
) -> Reply:
    if finish_reason is not None:
        steps.append(delta({}, finish_reason))
    if usage is not None:
        steps.append(usage_step(*usage))
    if done:
        steps.append({"op": "done"})
    return Reply(steps=steps)


def _text_steps(content: str, chunk_size: int, delay_s: float, key: str = "content") -> list[Step]:
    steps: list[Step] = []
    for piece in _pieces(content, chunk_size) if content else []:
        if delay_s:
            steps.append({"op": "sleep", "s": delay_s})
        steps.append(delta({key: piece}))
    return steps


def text(
    content: str,
    *,
    chunk_size: int = 4,
    delay_s: float = 0.0,
    finish_reason: str | None = "stop",
    usage: tuple[int, int] | None = None,
) -> Reply:
    """A plain streamed answer, ``chunk_size`` characters per chunk."""
    steps = [delta({"role": "assistant", "content": ""})]
    steps += _text_steps(content, chunk_size, delay_s)
    return _finish(steps, finish_reason, usage)


def reasoning(
    thought: str,
    answer: str = "",
    *,
    field_name: str = "reasoning_content",
    chunk_size: int = 8,
    usage: tuple[int, int] | None = None,
) -> Reply:
    """Reasoning deltas under ``field_name`` (``reasoning_content`` or ``reasoning``), then text."""
    steps = [delta({"role": "assistant", "content": ""})]
    steps += _text_steps(thought, chunk_size, 0.0, key=field_name)
    steps += _text_steps(answer, chunk_size, 0.0)
    return _finish(steps, "stop", usage)


def slow_tokens(n: int, interval_s: float, piece: str = " tok") -> Reply:
    """``n`` content chunks, each ``interval_s`` after the previous one."""
    steps = [delta({"role": "assistant", "content": ""})]
    for _ in range(n):
        steps.append({"op": "sleep", "s": interval_s})
        steps.append(delta({"content": piece}))
    return _finish(steps, "stop", None)


def _normalise_call(spec: ToolSpec, position: int, style: str) -> dict[str, Any]:
    if isinstance(spec, dict):
        call = dict(spec)
    else:
        name, args, *rest = spec
        call = {"name": name, "arguments": args}
        if rest:
            call["id"] = rest[0]
    args = call.get("arguments", {})
    call["arguments"] = args if isinstance(args, str) else json.dumps(args)
    if "id" not in call:
        call["id"] = (
            call["name"] if style == "gemini_no_index" else f"call_{position}{uuid.uuid4().hex[:8]}"
        )
    call.setdefault("extra", {})
    return call


def tool_calls(
    calls: Sequence[ToolSpec],
    *,
    style: str = "openai",
    content: str | None = None,
    finish_reason: str | None = None,
    chunk_size: int = 7,
    usage: tuple[int, int] | None = None,
) -> Reply:
    """A streamed tool-call turn shaped like a given server.

    Args:
        calls: ``(name, arguments)`` or ``(name, arguments, id)`` tuples, or dicts with
            ``name``, ``arguments``, optional ``id`` and ``extra`` (extra per-call fields such
            as Gemini's ``extra_content``). Arguments may be a dict or a raw string (to
            send invalid JSON on purpose). ``id=None`` omits the id.
        style: ``openai`` (header delta with id and name, then argument fragments, one call
            after the other), ``fragments`` (the same with calls interleaved), ``whole`` (one
            complete delta per call), ``gemini_no_index`` (no ``index``, whole calls, id =
            function name unless given, ``finish_reason: stop``), ``ollama_index0`` (whole
            calls, all at ``index: 0``), ``no_index_fragments`` (no index; the header carries
            the id, later fragments carry neither index nor id), ``no_ids`` (openai without ids).
        content: Text streamed before the calls.
        finish_reason: Defaults to ``tool_calls`` (``stop`` for the Gemini style).
        chunk_size: Characters per argument fragment.
        usage: ``(prompt_tokens, completion_tokens)`` for a trailing usage chunk.
    """
    if style not in _STYLE_BUILDERS:
        raise ValueError(f"unknown style {style!r}")
    norm = [_normalise_call(c, i, style) for i, c in enumerate(calls)]
    steps = [delta({"role": "assistant", "content": ""})]
    if content:
        steps += _text_steps(content, 4, 0.0)
    steps += [delta({"tool_calls": [entry]}) for entry in _STYLE_BUILDERS[style](norm, chunk_size)]
    if finish_reason is None:
        finish_reason = "stop" if style == "gemini_no_index" else "tool_calls"
    return _finish(steps, finish_reason, usage)


def _head(i: int | None, call: dict[str, Any], args: str, *, ids: bool = True) -> dict[str, Any]:
    """The first delta of a call: index (unless ``None``), id, type, name, arguments, extras."""
    entry: dict[str, Any] = {} if i is None else {"index": i}
    if ids and call["id"] is not None:
        entry["id"] = call["id"]
    entry["type"] = "function"
    entry["function"] = {"name": call["name"], "arguments": args}
    entry.update(call["extra"])
    return entry


def _sequential(
    norm: list[dict[str, Any]], size: int, *, index: bool, ids: bool
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for i, call in enumerate(norm):
        entries.append(_head(i if index else None, call, "", ids=ids))
        for piece in _pieces(call["arguments"], size) if call["arguments"] else []:
            frag: dict[str, Any] = {"index": i} if index else {}
            frag["function"] = {"arguments": piece}
            entries.append(frag)
    return entries


def _interleaved(norm: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    entries = [_head(i, call, "") for i, call in enumerate(norm)]
    pending = [_pieces(c["arguments"], size) if c["arguments"] else [] for c in norm]
    while any(pending):
        for i, pieces in enumerate(pending):
            if pieces:
                entries.append({"index": i, "function": {"arguments": pieces.pop(0)}})
    return entries


_STYLE_BUILDERS: dict[str, Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]] = {
    "openai": lambda n, size: _sequential(n, size, index=True, ids=True),
    "no_ids": lambda n, size: _sequential(n, size, index=True, ids=False),
    "no_index_fragments": lambda n, size: _sequential(n, size, index=False, ids=True),
    "fragments": _interleaved,
    "whole": lambda n, _size: [_head(i, c, c["arguments"]) for i, c in enumerate(n)],
    "gemini_no_index": lambda n, _size: [_head(None, c, c["arguments"]) for c in n],
    "ollama_index0": lambda n, _size: [_head(0, c, c["arguments"]) for c in n],
}
TOOL_STYLES = tuple(_STYLE_BUILDERS)


def stream(*steps: Step, usage: tuple[int, int] | None = None, done: bool = True) -> Reply:
    """A reply made of explicit steps (a trailing usage chunk and ``[DONE]`` added)."""
    return _finish(list(steps), None, usage, done)


def error(
    status: int,
    message: str = "fake error",
    *,
    headers: dict[str, str] | None = None,
    code: str | None = None,
    error_type: str | None = None,
    body: Any = None,
) -> Reply:
    """An HTTP error answer with an OpenAI-shaped JSON body (or ``body`` verbatim)."""
    if body is None:
        body = {
            "error": {
                "message": message,
                "type": error_type or "invalid_request_error",
                "code": code,
            }
        }
    return Reply(status=status, headers=dict(headers or {}), body=body)


CONTEXT_OVERFLOW_BODIES: dict[str, Any] = {
    "openai": {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9100 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "vllm": {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested "
        "5000 tokens (4500 in the messages, 500 in the completion).",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    "llamacpp": {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    },
    "ollama": {
        "error": {
            "message": "prompt too long; exceeded max context length by 312 tokens",
            "type": "api_error",
        }
    },
    "gemini": [
        {
            "error": {
                "code": 400,
                "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                "status": "INVALID_ARGUMENT",
            }
        }
    ],
}


def context_overflow(flavour: str = "openai") -> Reply:
    """A 400 context-length error as ``openai``, ``vllm``, ``llamacpp``, ``ollama`` or ``gemini`` word it."""
    return Reply(status=400, body=CONTEXT_OVERFLOW_BODIES[flavour])


def refuse() -> Reply:
    """Close the connection as soon as the request arrived, before any response byte."""
    return Reply(fault="refuse")


def hang() -> Reply:
    """Never send the response headers."""
    return Reply(fault="hang")


def hang_mid_stream(prefix: str = "partial") -> Reply:
    """Send some text, then go silent."""
    steps = [
        delta({"role": "assistant", "content": ""}),
        *_text_steps(prefix, 4, 0.0),
        {"op": "hang"},
    ]
    return Reply(steps=steps)


def truncated(prefix: str = "partial answer") -> Reply:
    """Send some text, then drop the connection mid-body (no finish, no ``[DONE]``)."""
    steps = [
        delta({"role": "assistant", "content": ""}),
        *_text_steps(prefix, 4, 0.0),
        {"op": "close"},
    ]
    return Reply(steps=steps)


def ended_early(prefix: str = "partial answer") -> Reply:
    """Send some text, then end the body cleanly without a finish reason or ``[DONE]``."""
    steps = [
        delta({"role": "assistant", "content": ""}),
        *_text_steps(prefix, 4, 0.0),
        {"op": "eof"},
    ]
    return Reply(steps=steps)


def invalid_json(prefix: str = "") -> Reply:
    """A chunk whose data is not JSON."""
    steps = [delta({"role": "assistant", "content": ""}), *_text_steps(prefix, 4, 0.0)]
    steps.append({"op": "raw", "text": 'data: {"choices": [{"delta": {"content": "oops"\n\n'})
    return _finish(steps, "stop", None)


def stream_error(message: str, *, code: Any = None, prefix: str = "") -> Reply:
    """An ``{"error": ...}`` object inside the SSE stream (vLLM and llama.cpp do this)."""
    steps = [delta({"role": "assistant", "content": ""}), *_text_steps(prefix, 4, 0.0)]
    steps.append(
        {
            "op": "chunk",
            "data": {"error": {"message": message, "type": "server_error", "code": code}},
        }
    )
    steps.append({"op": "done"})
    return Reply(steps=steps)


# ------------------------------------------------------------------------- responders


def _message_text(message: dict[str, Any] | None) -> str:
    if not message:
        return ""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def echo_responder(request: RecordedRequest) -> Reply:
    """Answer ``echo: <text of the last message>``."""
    return text(f"echo: {_message_text(request.last_message)}")


def tool_then_text_responder(
    calls: Sequence[ToolSpec], final: str, *, style: str = "openai"
) -> Responder:
    """A responder that asks for ``calls`` until the last message is a tool result, then says ``final``."""

    def respond(request: RecordedRequest) -> Reply:
        last = request.last_message or {}
        if request.tools and last.get("role") != "tool":
            return tool_calls(calls, style=style)
        return text(final)

    return respond


BUILTIN_RESPONDERS: dict[str, Responder] = {"echo": echo_responder}


def load_responder(path: str, args: dict[str, Any] | None = None) -> Responder:
    """Resolve a responder: a builtin name (``echo``) or ``module:attribute``.

    With ``args``, the attribute is a factory called with them, e.g.
    ``load_responder("tests.fake_llm:tool_then_text_responder",
    {"calls": [["list_cameras", {}]], "final": "Two cameras."})``.
    """
    if path in BUILTIN_RESPONDERS and args is None:
        return BUILTIN_RESPONDERS[path]
    module_name, _, attr = path.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    if args is not None:
        obj = obj(**args)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- server


class FakeLLM:
    """The server. An async context manager; also drives the standalone mode."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Responder | None = None,
        models: Iterable[str] = (DEFAULT_MODEL,),
    ) -> None:
        self.host = host
        self._port = port
        self.responder = responder
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._seq = 0

    # -- lifecycle
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``)."""
        return f"{self.url}/v1"

    async def start(self) -> FakeLLM:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_post("/_script", self._ctl_script)
        app.router.add_post("/_responder", self._ctl_responder)
        app.router.add_get("/_requests", self._ctl_requests)
        app.router.add_post("/_reset", self._ctl_reset)
        app.router.add_get("/_health", self._ctl_health)
        # handler_cancellation: a client that gives up cancels a hanging handler at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting
    def push(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then the responder answers."""
        self._queue.extend(replies)

    def set_responder(self, responder: Responder | None) -> None:
        self.responder = responder

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()

    @property
    def pending(self) -> int:
        """Replies still queued."""
        return len(self._queue)

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` chat requests were received; return them all."""
        if len(self.requests) < n:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            try:
                await asyncio.wait_for(fut, timeout)
            finally:
                self._waiters = [w for w in self._waiters if w[1] is not fut]
        return list(self.requests)

    def _record(self, request: web.Request, body: Any) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        self.requests.append(rec)
        for n, fut in self._waiters:
            if len(self.requests) >= n and not fut.done():
                fut.set_result(None)
        return rec

    async def _next_reply(self, rec: RecordedRequest) -> Reply:
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            result = self.responder(rec)
            if inspect.isawaitable(result):
                result = await result
            return result
        return text("(fake_llm: no scripted reply)")

    # -- handlers
    async def _models(self, _request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            self._record(request, raw.decode("utf-8", "replace"))
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        rec = self._record(request, body)
        reply = await self._next_reply(rec)
        model = body.get("model") or request.match_info.get("deployment") or DEFAULT_MODEL
        if reply.fault == "refuse":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing may be written on an aborted connection
        if reply.fault == "hang":
            await self._stopping.wait()
            return web.json_response({"error": {"message": "fake server stopping"}}, status=503)
        if reply.status != 200:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if not body.get("stream"):
            return web.json_response(
                self._assemble(reply, model, include_usage), headers=reply.headers
            )
        return await self._stream(request, reply, model, include_usage)

    def _chunk(
        self, model: str, cid: str, choice_delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "delta": choice_delta, "finish_reason": finish, "logprobs": None}
            ],
        }

    async def _stream(
        self, request: web.Request, reply: Reply, model: str, include_usage: bool
    ) -> web.StreamResponse:
        self._seq += 1
        cid = f"chatcmpl-fake{self._seq}"
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **reply.headers,
            }
        )
        await resp.prepare(request)
        for step in reply.steps:
            op = step["op"]
            if op == "sleep":
                await asyncio.sleep(step["s"])
            elif op == "hang":
                await self._stopping.wait()
                return resp
            elif op == "close":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            elif op == "eof":
                break
            else:
                payload = self._sse(step, model, cid, include_usage)
                if payload:
                    await resp.write(payload)
        await resp.write_eof()
        return resp

    def _sse(self, step: Step, model: str, cid: str, include_usage: bool) -> bytes:
        """The bytes one data step puts on the wire (empty for a usage chunk not asked for)."""
        op = step["op"]
        if op == "raw":
            return str(step["text"]).encode()
        if op == "done":
            return b"data: [DONE]\n\n"
        if op == "delta":
            data = self._chunk(model, cid, step["delta"], step.get("finish_reason"))
        elif op == "chunk":
            data = step["data"]
        elif op == "usage":
            if not include_usage:
                return b""
            p, c = step["prompt_tokens"], step["completion_tokens"]
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }
        else:
            raise ValueError(f"unknown step op {op!r}")
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def _assemble(self, reply: Reply, model: str, include_usage: bool) -> dict[str, Any]:
        """Fold the streamed steps into one non-streamed completion."""
        content, thoughts, calls, finish, usage = "", "", [], "stop", None
        for step in reply.steps:
            if step["op"] == "usage":
                p, c = step["prompt_tokens"], step["completion_tokens"]
                usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            if step["op"] != "delta":
                continue
            d = step["delta"]
            content += d.get("content") or ""
            thoughts += d.get("reasoning_content") or d.get("reasoning") or ""
            finish = step.get("finish_reason") or finish
            for tc in d.get("tool_calls") or []:
                fn = tc.get("function") or {}
                if tc.get("id") or fn.get("name") or not calls:
                    extra = {k: v for k, v in tc.items() if k not in ("index", "function")}
                    calls.append(
                        {
                            **extra,
                            "type": "function",
                            "function": {"name": fn.get("name"), "arguments": ""},
                        }
                    )
                calls[-1]["function"]["arguments"] += fn.get("arguments") or ""
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = calls
        out: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
        }
        if usage is not None:
            out["usage"] = usage
        return out

    # -- control endpoints (standalone mode)
    async def _ctl_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        self.push(*(Reply.from_json(item) for item in items))
        return web.json_response({"queued": len(self._queue)})

    async def _ctl_responder(self, request: web.Request) -> web.Response:
        data = await request.json()
        spec = data.get("path") or data.get("builtin")
        self.set_responder(load_responder(spec, data.get("args")) if spec else None)
        return web.json_response({"responder": spec})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        wait = int(request.query.get("wait", "0"))
        timeout = float(request.query.get("timeout", "5"))
        if wait:
            try:
                await self.wait_for_requests(wait, timeout)
            except TimeoutError:
                return web.json_response(
                    {"error": f"only {len(self.requests)} of {wait} requests arrived"}, status=408
                )
        return web.json_response([r.to_json() for r in self.requests])

    async def _ctl_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "queued": len(self._queue), "requests": len(self.requests)}
        )


# ------------------------------------------------------------------------- standalone


def load_script(path: str | Path) -> list[Reply]:
    """Read a JSON script: a list of replies (each in :meth:`Reply.to_json` form)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Reply.from_json(item) for item in (data if isinstance(data, list) else [data])]


async def _serve(args: argparse.Namespace) -> None:
    factory_args = json.loads(args.responder_args) if args.responder_args else None
    responder = load_responder(args.responder, factory_args) if args.responder else None
    fake = FakeLLM(
        host=args.host, port=args.port, responder=responder, models=args.model or [DEFAULT_MODEL]
    )
    if args.script:
        fake.push(*load_script(args.script))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        if args.port_file:
            await asyncio.to_thread(Path(args.port_file).write_text, str(fake.port), "utf-8")
        sys.stdout.write(f"FAKE_LLM_URL={fake.url}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_llm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see --port-file)")
    parser.add_argument("--script", help="JSON file with a list of replies, played first")
    parser.add_argument(
        "--responder", help="'echo' or module:callable answering once the script is used up"
    )
    parser.add_argument(
        "--responder-args",
        help="JSON object: call the --responder factory with these keyword arguments",
    )
    parser.add_argument("--model", action="append", help="model ids for GET /v1/models")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

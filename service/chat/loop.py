"""The tool-calling loop: stream a turn, run its tool calls, repeat until an answer.

Upstream semantics are kept (one iteration per model turn that asks for tools, tool
messages in OpenAI format, Gemini's per-call extras replayed), with these fixes:

* every tool call is announced (``tool_call``) before it runs and its result is
  published (``tool_result``) as soon as the turn's calls finish; calls of one turn run
  concurrently, each under the registry's timeout;
* when the iteration limit is reached the model gets one last call without tools, so
  the user still gets an answer made of what was found (``finish_reason: length``);
* a live frame reaches a vision-capable chat model once; afterwards the chain keeps a
  short placeholder, so later turns do not resend (and pay for) the image;
* text deltas are coalesced (see :mod:`service.chat.coalesce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.chat.coalesce import Coalescer
from service.llm import (
    ContentDelta,
    LlmError,
    Provider,
    Providers,
    ReasoningDelta,
    TurnEnd,
)
from service.mqtt import ReplyChannel
from service.tools import ToolContext, ToolOutcome, ToolRegistry

log = structlog.get_logger(__name__)

LENGTH_FALLBACK = (
    "I could not finish looking this up within the allowed number of steps. "
    "Try asking a narrower question."
)

OUT_OF_TOKENS = (
    "The model ran out of output tokens before it finished{where}. Raise its output limit "
    "(max_tokens in the provider's extra_body, or the server's own limit, such as "
    "llama.cpp's --n-predict or Ollama's num_predict){thinking}."
)
NO_IMAGES_NOTE = (
    "The model cannot take images, so it answered without the camera image; give the "
    "vision role to a model that can see, or set supports_vision: false for this one."
)

LAST_CALL_NOTE = (
    "You have used all tool calls available for this question. Answer now from the tool "
    "results above; say briefly what you could not check."
)


@dataclass(slots=True)
class LoopSettings:
    """Knobs of one run of the loop."""

    max_tool_iterations: int = 5
    stream: bool = True
    enable_thinking: bool | None = None
    turn_deadline_s: float = 120.0
    delta_max_chars: int = 80
    delta_min_interval_s: float = 0.05
    delta_max_delay_s: float = 0.15


@dataclass(slots=True)
class LoopResult:
    """What the loop produced; ``chain`` is the conversation including the answer."""

    content: str
    finish_reason: str
    iterations: int
    tool_calls: list[dict[str, Any]]
    chain: list[dict[str, Any]]
    usage: dict[str, Any] = field(default_factory=dict)
    reasoning: str = ""
    """The final turn's reasoning, when the server sent any."""
    notes: list[str] = field(default_factory=list)
    """What the caller should know about how the answer came about."""


class ChatLoop:
    """Runs one chat request's loop against the chat provider."""

    def __init__(
        self,
        providers: Providers,
        registry: ToolRegistry,
        tool_ctx: ToolContext,
        reply: ReplyChannel,
        settings: LoopSettings,
        question: str,
    ) -> None:
        self._providers = providers
        self._registry = registry
        self._tool_ctx = tool_ctx
        self._reply = reply
        self._settings = settings
        self._question = question
        self._usage = {"prompt_tokens": 0, "completion_tokens": 0, "llm_calls": 0, "tool_ms": 0.0}
        self._first_token_ms: float | None = None
        self._started = time.perf_counter()
        self._notes: list[str] = []

    async def run(self, chain: list[dict[str, Any]]) -> LoopResult:
        """Run the loop over ``chain`` (modified in place) until the model answers.

        Raises:
            LlmError: The model server failed; the code says how.
        """
        provider = self._providers.require_chat()
        tools = self._registry.schemas()
        executed: list[dict[str, Any]] = []
        iterations = 0
        pending_images: list[int] = []
        while True:
            last_call = iterations >= self._settings.max_tool_iterations
            if last_call and executed:
                chain.append({"role": "user", "content": LAST_CALL_NOTE})
            turn = await self._turn(provider, chain, None if last_call else tools)
            # The images were seen by this turn; from now on the chain keeps a placeholder.
            for index in pending_images:
                chain[index] = _image_placeholder(chain[index])
            pending_images = []
            if turn.images_dropped:
                self._note(NO_IMAGES_NOTE)
            if turn.finish_reason == "length":
                return await self._out_of_tokens(turn, chain, iterations, executed)
            if not turn.tool_calls or last_call:
                content = turn.content
                reason = "length" if last_call else (turn.finish_reason or "stop")
                if reason == "tool_calls":
                    reason = "length"
                if not content.strip() and reason == "length":
                    # A model that keeps asking for tools even when offered none.
                    content = LENGTH_FALLBACK
                    if self._settings.stream:
                        await self._reply.send("content", {"delta": content})
                return self._answer(content, reason, turn, chain, iterations, executed)
            iterations += 1
            chain.append(turn.assistant_message())
            outcomes = await self._run_tools(turn)
            images: list[dict[str, Any]] = []
            for call, outcome in zip(turn.tool_calls, outcomes, strict=True):
                await self._attach_image(outcome, images)
                chain.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
                executed.append(
                    {
                        "name": outcome.name,
                        "arguments": outcome.arguments,
                        "response": outcome.result,
                    }
                )
                if self._settings.stream:
                    await self._reply.send(
                        "tool_result",
                        {
                            "call_id": call.id,
                            "name": call.name,
                            "ok": outcome.ok,
                            "result": outcome.result,
                        },
                    )
            for message in images:
                pending_images.append(len(chain))
                chain.append(message)

    def _note(self, note: str) -> None:
        if note not in self._notes:
            self._notes.append(note)

    async def _out_of_tokens(
        self,
        turn: TurnEnd,
        chain: list[dict[str, Any]],
        iterations: int,
        executed: list[dict[str, Any]],
    ) -> LoopResult:
        """The server stopped at its token limit: not lookout's step limit, and no call runs.

        A tool call cut off there may have lost arguments, so none of the turn's calls
        is executed; the caller is told what ran out and what to change.
        """
        if turn.tool_calls:
            where = " writing a tool call (it was not run)"
        elif not turn.content.strip() and turn.reasoning:
            where = " thinking"
        else:
            where = ""
        thinking = ", or turn thinking off (enable_thinking: false)" if turn.reasoning else ""
        note = OUT_OF_TOKENS.format(where=where, thinking=thinking)
        self._notes.append(note)
        content = turn.content
        if not content.strip() or turn.tool_calls:
            content = (content.rstrip() + "\n\n" if content.strip() else "") + note
            if self._settings.stream:
                await self._reply.send("content", {"delta": content[len(turn.content) :]})
        log.warning(
            "chat_out_of_tokens",
            calls=len(turn.tool_calls),
            content_chars=len(turn.content),
            reasoning_chars=len(turn.reasoning),
        )
        return self._answer(content, "length", turn, chain, iterations, executed)

    def _answer(
        self,
        content: str,
        reason: str,
        turn: TurnEnd,
        chain: list[dict[str, Any]],
        iterations: int,
        executed: list[dict[str, Any]],
    ) -> LoopResult:
        """End the loop with ``content`` as the answer (appended to the chain)."""
        chain.append({"role": "assistant", "content": content})
        return LoopResult(
            content,
            reason,
            iterations,
            executed,
            chain,
            self._stats(),
            reasoning=turn.reasoning,
            notes=self._notes,
        )

    async def _turn(
        self, provider: Provider, chain: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> TurnEnd:
        """Stream one model turn to the caller; return the assembled turn."""
        self._usage["llm_calls"] += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            stream = provider.stream_turn(
                chain,
                tools=tools,
                enable_thinking=self._settings.enable_thinking,
                deadline_s=self._settings.turn_deadline_s,
                images_optional=True,
            )
            try:
                # aclosing: a cancelled turn closes its HTTP stream at once.
                async with contextlib.aclosing(stream):
                    async for event in stream:
                        queue.put_nowait(event)
            except Exception as exc:  # noqa: BLE001 - task boundary: hand it to the consumer
                # Not only LlmError: anything else (a bug, an unclassified malformed chunk)
                # must end the request now, not leave it waiting for its deadline.
                queue.put_nowait(exc)

        coalescer = Coalescer(
            self._send_delta,
            max_chars=self._settings.delta_max_chars,
            min_interval_s=self._settings.delta_min_interval_s,
            max_delay_s=self._settings.delta_max_delay_s,
        )
        producer = asyncio.create_task(produce(), name=f"llm-turn:{self._reply.request_id}")
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), coalescer.time_left())
                except TimeoutError:
                    await coalescer.flush()
                    continue
                if isinstance(event, Exception):
                    raise event
                if isinstance(event, ContentDelta | ReasoningDelta):
                    if self._first_token_ms is None:
                        self._first_token_ms = (time.perf_counter() - self._started) * 1000
                    if self._settings.stream:
                        kind = "content" if isinstance(event, ContentDelta) else "reasoning"
                        await coalescer.add(kind, event.text)
                elif isinstance(event, TurnEnd):
                    await coalescer.flush()
                    if event.usage is not None:
                        self._usage["prompt_tokens"] += event.usage.prompt_tokens
                        self._usage["completion_tokens"] += event.usage.completion_tokens
                    return event
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer

    async def _send_delta(self, kind: str, text: str) -> None:
        await self._reply.send(kind, {"delta": text})

    async def _run_tools(self, turn: TurnEnd) -> list[ToolOutcome]:
        if self._settings.stream:
            for call in turn.tool_calls:
                await self._reply.send(
                    "tool_call",
                    {
                        "call_id": call.id,
                        "name": call.name,
                        "arguments": call.arguments
                        if call.arguments is not None
                        else call.arguments_raw,
                    },
                )
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                self._registry.call(
                    call.name, call.arguments, self._tool_ctx, arguments_error=call.arguments_error
                )
                for call in turn.tool_calls
            )
        )
        self._usage["tool_ms"] += round((time.perf_counter() - started) * 1000, 2)
        return list(outcomes)

    async def _attach_image(self, outcome: ToolOutcome, images: list[dict[str, Any]]) -> None:
        """Give a live frame to the model in the form it can use."""
        if outcome.image_url is None:
            if outcome.image_note and "cannot take images" in outcome.image_note:
                self._note(NO_IMAGES_NOTE)
            return
        camera = outcome.image_camera or "camera"
        if self._providers.same_for_chat_and_vision:
            images.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": outcome.image_caption
                            or f"The live image from camera {camera!r} just now.",
                        },
                        {"type": "image_url", "image_url": {"url": outcome.image_url}},
                    ],
                }
            )
            return
        result = outcome.result if isinstance(outcome.result, dict) else {"result": outcome.result}
        if self._providers.vision is None:
            result["image"] = "not available: no vision model is configured"
        else:
            try:
                result["image_description"] = await self._providers.describe_image(
                    outcome.image_url,
                    _detections_text(result),
                    question=self._question,
                    deadline_s=self._settings.turn_deadline_s,
                )
            except LlmError as exc:
                result["image"] = f"the vision model could not describe the frame: {exc.message}"
        outcome.result = result
        outcome.content = _json(result)

    def _stats(self) -> dict[str, Any]:
        return {
            **self._usage,
            "first_token_ms": round(self._first_token_ms, 2) if self._first_token_ms else None,
            "total_ms": round((time.perf_counter() - self._started) * 1000, 2),
        }


def _json(data: Any) -> str:
    import json  # noqa: PLC0415

    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def _detections_text(result: dict[str, Any]) -> str:
    lines = []
    for obj in result.get("objects", []) or []:
        if isinstance(obj, dict):
            parts = [str(obj.get("label", "object"))]
            if obj.get("sub_label"):
                parts.append(f"({obj['sub_label']})")
            if obj.get("zones"):
                parts.append("in " + ", ".join(map(str, obj["zones"])))
            if obj.get("stationary"):
                parts.append("(stationary)")
            lines.append(" ".join(parts))
    return "\n".join(lines) if lines else "The detector is not tracking any object right now."


def _image_placeholder(message: dict[str, Any]) -> dict[str, Any]:
    texts = [
        part.get("text", "")
        for part in message.get("content") or []
        if isinstance(part, dict) and part.get("type") == "text"
    ]
    note = " ".join(t for t in texts if t) or "A live image."
    return {"role": "user", "content": f"{note} (The image was shown once and is not kept.)"}

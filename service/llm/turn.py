"""One streamed LLM turn: request, retries before the first event, assembly, errors.

Retries are ours (the SDK's are off): 429, 5xx and connection errors are retried with
jittered exponential backoff, honouring ``Retry-After``, but only while nothing has been
yielded to the caller, so half an answer is never silently replayed. Timeouts are not
retried: a server that was too slow once is likely to be too slow again, and each retry
would multiply the wait.

The SDK sends the request and reports HTTP errors, but the SSE body is read here with
``json.loads`` into plain dicts: building the SDK's pydantic model for every chunk cost
about half the CPU of a streamed token. Transport failures and in-stream
``{"error": ...}`` events are raised as the SDK's own exceptions, so
:mod:`service.llm.classify` sees exactly what it saw before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from service.llm.accumulate import ToolCallAccumulator
from service.llm.attempts import Attempts
from service.llm.errors import LlmError, LlmErrorCode, StreamEndedEarlyError
from service.llm.events import ContentDelta, ReasoningDelta, TurnEnd, TurnEvent, Usage
from service.llm.sse import DONE, sse_chunks
from service.llm.thinktags import Piece, ThinkTagSplitter

if TYPE_CHECKING:
    from service.llm.endpoint import Endpoint

log = structlog.get_logger(__name__)


@dataclass
class _Turn:
    """What one streamed turn accumulated so far."""

    started: float
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: ToolCallAccumulator = field(default_factory=ToolCallAccumulator)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    first_token_at: float | None = None
    think_tags: ThinkTagSplitter = field(default_factory=ThinkTagSplitter)
    done: bool = False
    """The stream ended with ``[DONE]``."""

    def absorb(self, chunk: Any, now: float) -> list[TurnEvent]:
        """The events one decoded SSE chunk (a plain JSON object) carries."""
        events: list[TurnEvent] = []
        if chunk == DONE:
            self.done = True
            return events
        if not isinstance(chunk, dict):
            return events
        raw_usage = chunk.get("usage")
        if isinstance(raw_usage, dict):
            usage = Usage(
                prompt_tokens=int(raw_usage.get("prompt_tokens") or 0),
                completion_tokens=int(raw_usage.get("completion_tokens") or 0),
            )
            # vLLM's continuous usage stats repeat it on every chunk; report changes only.
            if usage != self.usage:
                self.usage = usage
                events.append(usage)
        if self.model is None:
            model = chunk.get("model")
            self.model = model if isinstance(model, str) and model else None
        # The usage chunk (include_usage) has no choices; some servers send choices=null.
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return events
        choice = choices[0]
        if not isinstance(choice, dict):
            return events
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._absorb_delta(delta, events, now)
        if events and self.first_token_at is None and not isinstance(events[-1], Usage):
            self.first_token_at = now
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = str(reason)
        return events

    def _absorb_delta(self, delta: dict[str, Any], events: list[TurnEvent], now: float) -> None:
        # reasoning_content: llama.cpp, older vLLM; reasoning: vLLM >= 0.17.1, Ollama.
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            self.reasoning.append(thought)
            events.append(ReasoningDelta(thought))
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.extend(self._split(self.think_tags.feed(text)))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self.content.append(refusal)
            events.append(ContentDelta(refusal))
        tool_deltas = delta.get("tool_calls")
        if tool_deltas:
            self.calls.feed(tool_deltas)
            if self.first_token_at is None:
                self.first_token_at = now

    def _split(self, pieces: list[Piece]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for kind, text in pieces:
            if kind == "reasoning":
                self.reasoning.append(text)
                events.append(ReasoningDelta(text))
            elif kind == "reclassify":
                # The template opened the reasoning: what streamed as the answer was not.
                moved = _without_partial_close("".join(self.content))
                self.content = []
                self.reasoning.append(moved + text)
                if text:
                    events.append(ReasoningDelta(text))
            elif kind == "unreason":
                # Assumed reasoning that never closed: it was the answer all along.
                whole = "".join(self.reasoning) + text
                self.reasoning = []
                self.content.append(whole)
                if whole:
                    events.append(ContentDelta(whole))
            else:
                self.content.append(text)
                events.append(ContentDelta(text))
        return events

    def flush(self) -> list[TurnEvent]:
        """Text held back while a ``<think>`` tag might have been forming."""
        return self._split(self.think_tags.flush())

    def check_finished(self) -> None:
        """Raise when the stream ended without a finish reason (cut short).

        Some servers and proxies end a complete answer with ``[DONE]`` but never send a
        ``finish_reason``: with ``[DONE]`` and something said, the answer is whole.
        """
        if self.finish_reason is not None:
            return
        if self.done and (self.content or self.reasoning or self.calls):
            self.finish_reason = "stop"
            return
        raise StreamEndedEarlyError

    def end(self, now: float, attempts: int, *, images_dropped: bool = False) -> TurnEnd:
        calls = self.calls.result()
        return TurnEnd(
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            tool_calls=calls,
            # Gemini ends tool turns with "stop"; the calls are what matters. "length" is
            # kept: a call cut off by the token limit must not be run.
            finish_reason=_finish(self.finish_reason, bool(calls)),
            usage=self.usage,
            first_token_ms=None
            if self.first_token_at is None
            else (self.first_token_at - self.started) * 1000.0,
            total_ms=(now - self.started) * 1000.0,
            attempts=attempts,
            model=self.model,
            images_dropped=images_dropped,
        )


async def stream_turn(
    provider: Endpoint,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    enable_thinking: bool | None = None,
    response_format: dict[str, Any] | None = None,
    deadline_s: float | None = None,
    images_optional: bool = False,
) -> AsyncGenerator[TurnEvent, None]:
    """Stream one model turn.

    Use it with ``contextlib.aclosing`` (or drain it) so the HTTP stream is closed
    promptly if the caller stops early.

    Args:
        provider: The endpoint.
        messages: OpenAI-shaped messages, sent as they are.
        tools: OpenAI tool definitions; when given, ``tool_choice="auto"`` is sent.
        enable_thinking: ``True``/``False`` to switch reasoning per the provider's
            ``thinking_control``; ``None`` sends nothing.
        response_format: An OpenAI ``response_format`` (dropped for providers without
            ``json_schema`` support when it is a JSON schema).
        deadline_s: Bound on the whole turn, retries and backoff included. Chunk gaps are
            bounded separately by the provider's ``timeout_s``.
        images_optional: When the server cannot take images, leave them out and go on
            (a chat); otherwise fail with ``llm_no_images`` (a watch, which must see).

    Yields:
        ``ContentDelta``, ``ReasoningDelta`` and ``Usage`` events as they arrive, then
        exactly one ``TurnEnd``.

    Raises:
        LlmError: With a code from :class:`LlmErrorCode`; nothing else escapes for
            transport or server problems.
    """
    loop = asyncio.get_running_loop()
    _ = provider.client  # built (and openai imported) before the clock starts
    plan = Attempts(
        provider,
        messages,
        tools=tools,
        enable_thinking=enable_thinking,
        response_format=response_format,
        deadline_s=deadline_s,
        started=loop.time(),
        images_optional=images_optional,
    )
    while True:
        plan.attempts += 1
        # A template known to open the reasoning itself, unless thinking is off for this
        # request (then the model answers straight away).
        opened = provider.think_opened and enable_thinking is not False
        turn = _Turn(started=plan.started, think_tags=ThinkTagSplitter(opened=opened))
        emitted = False
        response: Any = None
        chunks: AsyncGenerator[Any, None] | None = None
        try:
            async with asyncio.timeout_at(plan.deadline):
                response = await provider.open_stream(plan.body)
            iterator = chunks = sse_chunks(response)
            while True:
                try:
                    # The deadline covers our own awaits only, never the caller's code
                    # between two yields: a timeout scope must not span a yield.
                    async with asyncio.timeout_at(plan.deadline):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                for event in turn.absorb(chunk, loop.time()):
                    emitted = True
                    yield event
            turn.check_finished()
            for event in turn.flush():
                yield event
        except LlmError:
            raise
        except Exception as exc:  # noqa: BLE001  (classified; anything unknown is re-raised)
            delay = plan.after_failure(exc, emitted=emitted, now=loop.time())
            if delay:
                await asyncio.sleep(delay)
            continue
        finally:
            if chunks is not None:
                await _close_quietly(chunks.aclose)
            if response is not None:
                await _close_quietly(response.aclose)
        provider.last_success_at = loop.time()
        if turn.think_tags.reclassified and not provider.think_opened:
            provider.think_opened = True
            log.warning(
                "llm_template_opens_thinking",
                provider=provider.name,
                hint="the first answer streamed its reasoning as text; set "
                "template_opens_think: true to avoid even that",
            )
        yield turn.end(loop.time(), plan.attempts, images_dropped=plan.images_dropped)
        return


def _without_partial_close(text: str) -> str:
    """``text`` without a ``</think>`` that begins at its very end (split across chunks)."""
    for size in range(min(len(text), len("</think>") - 1), 0, -1):
        if "</think>".startswith(text[-size:]):
            return text[:-size]
    return text


def _finish(reason: str | None, has_calls: bool) -> str:
    if reason == "length":
        return reason
    return "tool_calls" if has_calls else (reason or "stop")


async def _close_quietly(close: Callable[[], Awaitable[object]]) -> None:
    try:
        await close()
    except Exception as exc:  # noqa: BLE001  (closing a broken socket must not mask the real error)
        log.debug("llm_stream_close_failed", error=type(exc).__name__)


async def complete(
    provider: Endpoint,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    enable_thinking: bool | None = None,
    response_format: dict[str, Any] | None = None,
    deadline_s: float | None = None,
) -> TurnEnd:
    """Run one turn to the end and return its :class:`TurnEnd` (for the watch engine).

    Raises:
        LlmError: As :func:`stream_turn`.
    """
    async with aclosing(
        stream_turn(
            provider,
            messages,
            tools=tools,
            enable_thinking=enable_thinking,
            response_format=response_format,
            deadline_s=deadline_s,
        )
    ) as events:
        async for event in events:
            if isinstance(event, TurnEnd):
                return event
    raise LlmError(LlmErrorCode.ERROR, "the turn ended without a result")  # pragma: no cover

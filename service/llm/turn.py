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
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from service.llm.accumulate import ToolCallAccumulator
from service.llm.classify import classify, is_capability_rejection
from service.llm.errors import (
    RETRY_AFTER_CAP_S,
    LlmError,
    LlmErrorCode,
    StreamEndedEarlyError,
    backoff_delay,
    parse_retry_after,
)
from service.llm.events import ContentDelta, ReasoningDelta, TurnEnd, TurnEvent, Usage
from service.llm.sse import sse_chunks
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

    def absorb(self, chunk: Any, now: float) -> list[TurnEvent]:
        """The events one decoded SSE chunk (a plain JSON object) carries."""
        events: list[TurnEvent] = []
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
            else:
                self.content.append(text)
                events.append(ContentDelta(text))
        return events

    def flush(self) -> list[TurnEvent]:
        """Text held back while a ``<think>`` tag might have been forming."""
        return self._split(self.think_tags.flush())

    def check_finished(self) -> None:
        """Raise when the stream ended without a finish reason (cut short)."""
        if self.finish_reason is None:
            raise StreamEndedEarlyError

    def end(self, now: float, attempts: int) -> TurnEnd:
        calls = self.calls.result()
        return TurnEnd(
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            tool_calls=calls,
            # Gemini ends tool turns with "stop"; the calls are what matters.
            finish_reason="tool_calls" if calls else (self.finish_reason or "stop"),
            usage=self.usage,
            first_token_ms=None
            if self.first_token_at is None
            else (self.first_token_at - self.started) * 1000.0,
            total_ms=(now - self.started) * 1000.0,
            attempts=attempts,
            model=self.model,
        )


async def stream_turn(
    provider: Endpoint,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    enable_thinking: bool | None = None,
    response_format: dict[str, Any] | None = None,
    deadline_s: float | None = None,
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

    Yields:
        ``ContentDelta``, ``ReasoningDelta`` and ``Usage`` events as they arrive, then
        exactly one ``TurnEnd``.

    Raises:
        LlmError: With a code from :class:`LlmErrorCode`; nothing else escapes for
            transport or server problems.
    """
    loop = asyncio.get_running_loop()
    _ = provider.client  # built (and openai imported) before the clock starts
    plan = _Attempts(
        provider,
        messages,
        tools=tools,
        enable_thinking=enable_thinking,
        response_format=response_format,
        deadline_s=deadline_s,
        started=loop.time(),
    )
    while True:
        plan.attempts += 1
        turn = _Turn(started=plan.started)
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
        yield turn.end(loop.time(), plan.attempts)
        return


class _Attempts:
    """The request of one turn and what its failed attempts decide."""

    def __init__(
        self,
        provider: Endpoint,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        enable_thinking: bool | None,
        response_format: dict[str, Any] | None,
        deadline_s: float | None,
        started: float,
    ) -> None:
        self.provider = provider
        self._build = functools.partial(
            provider.build_request,
            messages,
            tools=tools,
            enable_thinking=enable_thinking,
            response_format=response_format,
        )
        self.body = self._build()
        self.deadline_s = deadline_s
        self.started = started
        self.deadline = None if deadline_s is None else started + deadline_s
        self.attempts = 0
        self.retries = 0

    def after_failure(self, exc: Exception, *, emitted: bool, now: float) -> float:
        """Seconds to wait before the next attempt; raises when there is none.

        Raises:
            LlmError: The classified failure when it is final.
            Exception: ``exc`` itself when it is not an LLM failure (a bug).
        """
        provider = self.provider
        err = classify(exc, provider=provider, deadline_s=self.deadline_s, started=emitted)
        if err is None:
            raise exc
        if not emitted and is_capability_rejection(exc, provider, self.body):
            # The server rejected an optional parameter, now switched off: resend at once.
            log.warning("llm_option_rejected", provider=provider.name, status=err.status)
            self.body = self._build()
            return 0.0
        delay = _retry_delay(provider, err, exc, self.retries + 1, emitted)
        if delay is None or (self.deadline is not None and now + delay >= self.deadline):
            log.warning(
                "llm_turn_failed",
                provider=provider.name,
                code=err.code.value,
                status=err.status,
                attempts=self.attempts,
                reason=err.message,
            )
            if self.retries and err.code is LlmErrorCode.UNAVAILABLE:
                err = LlmError(
                    err.code,
                    f"{err.message} (after {self.attempts} attempts)",
                    retryable=err.retryable,
                    status=err.status,
                )
            raise err from None
        self.retries += 1
        log.warning(
            "llm_retry",
            provider=provider.name,
            code=err.code.value,
            status=err.status,
            attempt=self.attempts,
            delay_s=round(delay, 3),
        )
        return delay


def _retry_delay(
    provider: Endpoint, err: LlmError, exc: BaseException, retry: int, started: bool
) -> float | None:
    """Seconds to wait before retry number ``retry``, or ``None`` when not to retry."""
    if started or not err.retryable or err.code is LlmErrorCode.TIMEOUT:
        return None
    if retry > provider.settings.max_retries:
        return None

    response = getattr(exc, "response", None)
    wait = parse_retry_after(getattr(response, "headers", None))
    if wait is not None:
        return None if wait > RETRY_AFTER_CAP_S else wait
    return backoff_delay(retry, base_s=provider.retry_base_s, cap_s=provider.retry_cap_s)


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

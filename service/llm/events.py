"""The typed events of one streamed LLM turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.llm.accumulate import ToolCall


@dataclass(frozen=True)
class ContentDelta:
    """A piece of the answer text."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (``reasoning_content`` or ``reasoning``)."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Token counts reported by the server (the usage chunk)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class TurnEnd:
    """The last event of a turn: everything the model said, assembled.

    Attributes:
        content: The full answer text.
        reasoning: The full reasoning text (empty when the server sent none).
        tool_calls: The requested calls; non-empty means a tool turn whatever the server's
            finish reason was.
        finish_reason: ``length`` when the server stopped at its token limit (calls or
            not: a call cut off there must not run), else ``tool_calls`` when there are
            calls, else the server's value (``stop``, ``content_filter``…).
        usage: Token counts when the server reported them.
        first_token_ms: From the request to the first text, reasoning or tool-call data.
        total_ms: From the request (first attempt) to the end of the stream.
        attempts: HTTP requests made (1 + retries).
        model: The model name the server reported, if any.
        images_dropped: The server cannot take images, so they were left out of the
            request (and the model answered without them).
    """

    content: str
    reasoning: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0
    attempts: int = 1
    model: str | None = None
    images_dropped: bool = False

    def assistant_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (reasoning left out)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [call.to_message_dict() for call in self.tool_calls]
        elif not self.content:
            message["content"] = ""
        return message


TurnEvent = ContentDelta | ReasoningDelta | Usage | TurnEnd

"""The LLM layer: OpenAI-compatible providers, one streamed turn, typed events and errors.

A :class:`Provider` wraps one endpoint (OpenAI, Azure OpenAI, Ollama, llama.cpp, vLLM,
Gemini); :func:`stream_turn` streams one turn as typed events and raises
:class:`LlmError` with a stable code on failure; :class:`Providers` picks the provider for
each role. Depends only on the settings.
"""

from __future__ import annotations

from service.llm.accumulate import ToolCall, ToolCallAccumulator
from service.llm.errors import LlmError, LlmErrorCode
from service.llm.events import ContentDelta, ReasoningDelta, TurnEnd, TurnEvent, Usage
from service.llm.provider import REASONING_EFFORT_OFF, REASONING_EFFORT_ON, Provider
from service.llm.roles import DESCRIBE_SYSTEM_PROMPT, Providers
from service.llm.turn import complete, stream_turn

__all__ = [
    "DESCRIBE_SYSTEM_PROMPT",
    "REASONING_EFFORT_OFF",
    "REASONING_EFFORT_ON",
    "ContentDelta",
    "LlmError",
    "LlmErrorCode",
    "Provider",
    "Providers",
    "ReasoningDelta",
    "ToolCall",
    "ToolCallAccumulator",
    "TurnEnd",
    "TurnEvent",
    "Usage",
    "complete",
    "stream_turn",
]

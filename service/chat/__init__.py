"""The chat: the `chat` and `chat/cancel` requests and the tool-calling loop.

:class:`ChatService` answers a question (one-line with a server-held conversation, or a
client-held message chain), streams deltas, tool calls and results, and ends with one
terminal reply. It uses the tools, the LLM layer and the store; nothing below imports it.
"""

from __future__ import annotations

from service.chat.requests import ChatCancelRequest, ChatRequest, ChatService

__all__ = [
    "ChatCancelRequest",
    "ChatRequest",
    "ChatService",
]

"""The conversation agent: Assist's text to lookout's ``chat``, the answer back.

Home Assistant's conversation id is lookout's conversation id (ULIDs, and any id of
``A-Za-z0-9_-``, are passed as they are; anything else is hashed to such an id), so a
follow-up in Assist continues lookout's server-held conversation.

Streaming depends on the release:

- with a chat log (``conversation.ChatLog``, 2025.4 in the tests), lookout's content
  replies stream into it as deltas, and an Assist pipeline forwards each one as an
  ``intent-progress`` event while lookout is still answering; where the chat log knows
  external tool calls (``llm.ToolInput.external``) and thinking content, lookout's
  tool calls, tool results and reasoning go into it too, marked as run by lookout;
- without one (2024.11), the agent waits for lookout's final text.

Either way Assist's answer is lookout's final text (``done.message.content``); an
``error`` reply, or no reply within the configured timeout, becomes an Assist error
response in words.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from homeassistant.components import conversation
from homeassistant.const import MATCH_ALL
from homeassistant.helpers import intent, llm
from homeassistant.util.ulid import ulid_now

from .client import Call, LookoutError, raise_for_error
from .const import NAME_RE
from .words import describe_error

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.entity_platform import AddEntitiesCallback

    from . import LookoutRuntime

CHAT_LOG = hasattr(conversation, "ChatLog")
"""Agents stream into a chat log (2025.4 has it; 2024.11 does not)."""
EXTERNAL_TOOLS = "external" in getattr(llm.ToolInput, "__dataclass_fields__", {})
"""The chat log takes tool calls that the agent ran itself."""
THINKING = CHAT_LOG and "thinking_content" in {
    f.name for f in dataclasses.fields(conversation.AssistantContent)
}
"""The chat log takes the model's reasoning."""
CONTINUE = "continue_conversation" in {
    f.name for f in dataclasses.fields(conversation.ConversationResult)
}


def lookout_conversation_id(ha_id: str) -> str:
    """The conversation id lookout holds for Home Assistant's conversation id."""
    if NAME_RE.fullmatch(ha_id):
        return ha_id
    return "ha-" + hashlib.sha256(ha_id.encode()).hexdigest()[:40]


async def async_setup_entry(
    hass: HomeAssistant,
    entry: ConfigEntry[LookoutRuntime],
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the agent of this lookout."""
    async_add_entities([LookoutAgent(entry)])


class LookoutAgent(conversation.ConversationEntity):
    """Assist's conversation agent backed by lookout's chat."""

    _attr_supports_streaming = True
    _attr_should_poll = False

    def __init__(self, entry: ConfigEntry[LookoutRuntime]) -> None:
        """One agent per lookout."""
        self.entry = entry
        self._attr_unique_id = entry.entry_id
        self._attr_name = entry.title

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Any: the model answers in the language it is asked in."""
        return MATCH_ALL

    @property
    def runtime(self) -> LookoutRuntime:
        """The loaded entry's client and options."""
        return self.entry.runtime_data

    async def async_process(
        self, user_input: conversation.ConversationInput
    ) -> conversation.ConversationResult:
        """Ask lookout; through the chat log where the release has one."""
        if CHAT_LOG:
            return await super().async_process(user_input)
        conversation_id = user_input.conversation_id or ulid_now()
        return await self._ask(user_input, conversation_id, None)

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: Any
    ) -> conversation.ConversationResult:
        """Ask lookout, streaming its answer into the chat log."""
        return await self._ask(user_input, chat_log.conversation_id, chat_log)

    async def _ask(
        self,
        user_input: conversation.ConversationInput,
        conversation_id: str,
        chat_log: Any,
    ) -> conversation.ConversationResult:
        runtime = self.runtime
        context = user_input.context
        user = runtime.lookout_user(context.user_id if context else None)
        response = intent.IntentResponse(language=user_input.language)
        body = {
            "text": user_input.text,
            "conversation_id": lookout_conversation_id(conversation_id),
            "stream": True,
        }
        try:
            call = await runtime.client.async_request(user, "chat", body)
            try:
                done = await self._follow(call, chat_log, user_input, runtime.timeout)
            finally:
                # Cancelled (Assist gave up) or failed: lookout need not go on.
                if call.terminal is None:
                    runtime.client.cancel_in_background(call)
                runtime.client.forget(call)
        except LookoutError as err:
            response.async_set_error(
                intent.IntentResponseErrorCode.UNKNOWN, describe_error(err, user)
            )
            return self._result(response, conversation_id, chat_log)
        answer = final_text(done)
        if chat_log is not None and not _ends_with(chat_log, answer):
            chat_log.async_add_assistant_content_without_tools(
                conversation.AssistantContent(
                    agent_id=user_input.agent_id or self.entity_id, content=answer
                )
            )
        response.async_set_speech(answer)
        return self._result(response, conversation_id, chat_log)

    async def _follow(
        self,
        call: Call,
        chat_log: Any,
        user_input: conversation.ConversationInput,
        timeout: float,
    ) -> dict[str, Any]:
        """Read the call's replies (into the chat log where there is one); the done reply."""
        if chat_log is None:
            async for _reply in call.replies(timeout):
                pass
        else:
            agent_id = user_input.agent_id or self.entity_id
            stream = _deltas(call, timeout)
            async for _content in chat_log.async_add_delta_content_stream(agent_id, stream):
                pass
        return raise_for_error(call.terminal)

    def _result(
        self, response: intent.IntentResponse, conversation_id: str, chat_log: Any
    ) -> conversation.ConversationResult:
        if CONTINUE and chat_log is not None:
            return conversation.ConversationResult(
                response=response,
                conversation_id=conversation_id,
                continue_conversation=chat_log.continue_conversation,
            )
        return conversation.ConversationResult(response=response, conversation_id=conversation_id)


async def _deltas(call: Call, timeout: float) -> AsyncIterator[dict[str, Any]]:
    """The replies of a chat as chat log deltas.

    Each model turn is one assistant message: a new one starts with the first text
    after a tool round. Tool calls and results go in only where the chat log takes
    calls the agent ran itself (else Home Assistant would try to run them).
    """
    yield {"role": "assistant"}
    after_tools = False
    async for reply in call.replies(timeout):
        kind = reply.get("type")
        if kind in ("content", "reasoning"):
            piece = reply.get("delta")
            if not isinstance(piece, str) or not piece:
                continue
            if kind == "reasoning" and not THINKING:
                continue
            key = "content" if kind == "content" else "thinking_content"
            if after_tools:
                after_tools = False
                yield {"role": "assistant", key: piece}
            else:
                yield {key: piece}
        elif kind == "tool_call":
            after_tools = True
            if EXTERNAL_TOOLS:
                arguments = reply.get("arguments")
                # ``external`` (run by the agent, not by Home Assistant) is not a field
                # of every release's ToolInput; EXTERNAL_TOOLS says this one has it.
                tool_input: dict[str, Any] = {
                    "id": str(reply.get("call_id")),
                    "tool_name": str(reply.get("name")),
                    "tool_args": arguments if isinstance(arguments, dict) else {},
                    "external": True,
                }
                yield {"tool_calls": [llm.ToolInput(**tool_input)]}
        elif kind == "tool_result":
            after_tools = True
            if EXTERNAL_TOOLS:
                result = reply.get("result")
                yield {
                    "role": "tool_result",
                    "tool_call_id": str(reply.get("call_id")),
                    "tool_name": str(reply.get("name")),
                    "tool_result": result if isinstance(result, dict) else {"result": result},
                }


def final_text(done: dict[str, Any]) -> str:
    """The answer (``done.message.content``), or lookout's notes when the model said nothing."""
    message = done.get("message")
    if not isinstance(message, dict):
        message = {}
    content = str(message.get("content") or "").strip()
    if content:
        return content
    notes = [str(n) for n in done.get("notes") or [] if n]
    return " ".join(["lookout's model gave no answer.", *notes])


def _ends_with(chat_log: Any, answer: str) -> bool:
    """Whether the chat log's last message is the assistant saying ``answer``."""
    last = chat_log.content[-1] if chat_log.content else None
    return (
        last is not None
        and last.role == "assistant"
        and (last.content or "").strip() == answer.strip()
    )

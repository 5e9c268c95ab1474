"""The `chat` and `chat/cancel` requests.

Two ways to hold a conversation:

* ``text`` (+ ``conversation_id``): lookout keeps the chain in its store, so a Home
  Assistant automation sends one line and gets an answer that remembers earlier turns.
  Only lookout writes ``system`` and ``tool`` messages into such a chain.
* ``messages``: the client holds the history (Frigate's way). lookout adds its system
  prompt when the first message is not ``system`` and, with ``include_messages``, returns
  the whole chain to replay verbatim so the model server's prompt cache keeps hitting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.chat.loop import ChatLoop, LoopSettings
from service.chat.prompt import CameraLine, build_system_prompt, stamp_user_text
from service.llm import LlmError, Providers
from service.mqtt import Dispatcher, ErrorCode, Request, RequestContext, RequestError
from service.settings import NAME_RE, Settings
from service.store import Conversation, ConversationStore
from service.tools import Access, ToolContext, ToolRegistry, access_for, local_zone

log = structlog.get_logger(__name__)

MAX_TEXT = 16_000
MAX_MESSAGES = 200


class ChatMessageIn(BaseModel):
    """One OpenAI-format message from a client-held history."""

    # Liberal: clients echo assistant messages as servers sent them, with fields such as
    # `reasoning`, `reasoning_content`, `refusal`, `annotations` or `audio`; those are
    # dropped here (servers that re-render templates reject them), not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(None, max_length=128)
    name: str | None = Field(None, max_length=128)
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=32)

    def to_dict(self) -> dict[str, Any]:
        """The message as the model server gets it."""
        return self.model_dump(exclude_none=True) | {"content": self.content}


class ChatRequest(Request):
    """`<prefix>/<user>/chat`."""

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    messages: list[ChatMessageIn] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    conversation_id: str | None = None
    stream: bool = True
    max_tool_iterations: int = Field(5, ge=1, le=10)
    enable_thinking: bool | None = None
    include_messages: bool = False

    @field_validator("conversation_id")
    @classmethod
    def _conversation(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _one_history(self) -> ChatRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("send exactly one of 'text' or 'messages'")
        if self.messages is not None and self.conversation_id is not None:
            raise ValueError(
                "'conversation_id' goes with 'text'; with 'messages' you hold the history"
            )
        if self.messages is not None and self.messages[-1].role not in ("user", "tool"):
            raise ValueError("the last message must be from the user (or a tool result)")
        return self


class ChatCancelRequest(Request):
    """`<prefix>/<user>/chat/cancel` with the ``id`` of the chat to stop."""


@dataclass
class ChatService:
    """Serves chat requests with the configured chat provider and tools."""

    settings: Settings
    providers: Providers
    registry: ToolRegistry
    conversations: ConversationStore
    cameras: Any
    """Something with ``cameras() -> list[CameraInfo]`` (the Frigate mirror)."""
    tool_deps: Any
    dispatcher: Dispatcher | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _lock_users: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: ChatRequest, ctx: RequestContext) -> None:
        """Answer one chat request, streaming unless asked not to."""
        access = access_for(self.settings, ctx.user)
        self._check_limits(request)
        try:
            self.providers.require_chat()
        except LlmError as exc:
            raise RequestError(ErrorCode(exc.code.value), exc.message) from None
        async with asyncio.timeout(self.settings.chat.request_deadline_s):
            try:
                if request.text is not None:
                    await self._server_held(request, ctx, access)
                else:
                    await self._client_held(request, ctx, access)
            except LlmError as exc:
                raise RequestError(ErrorCode(exc.code.value), exc.message) from None
            except TimeoutError:
                raise RequestError(
                    ErrorCode.TIMEOUT,
                    f"no answer within {self.settings.chat.request_deadline_s:g} s",
                ) from None

    def _check_limits(self, request: ChatRequest) -> None:
        limits = self.settings.limits
        problems = []
        if request.messages is not None and len(request.messages) > limits.max_chat_messages:
            problems.append(
                f"{len(request.messages)} messages; limits.max_chat_messages is "
                f"{limits.max_chat_messages}"
            )
        texts = [request.text] if request.text is not None else []
        texts += [m.content for m in request.messages or [] if isinstance(m.content, str)]
        longest = max((len(t) for t in texts), default=0)
        if longest > limits.max_chat_text_chars:
            problems.append(
                f"a message of {longest} characters; limits.max_chat_text_chars is "
                f"{limits.max_chat_text_chars}"
            )
        if request.max_tool_iterations > limits.max_tool_iterations:
            problems.append(
                f"max_tool_iterations {request.max_tool_iterations}; "
                f"limits.max_tool_iterations is {limits.max_tool_iterations}"
            )
        if problems:
            raise RequestError(ErrorCode.INVALID_REQUEST, "over a limit: " + "; ".join(problems))

    async def cancel(self, request: ChatCancelRequest, ctx: RequestContext) -> None:
        """Stop a running chat; its own stream ends with ``error: cancelled``."""
        target = request.id
        if target is None or self.dispatcher is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "name the chat to cancel by its 'id'")
        running = self.dispatcher.running(ctx.user, target)
        remote = self.dispatcher.remote_cancel
        # In a cluster the chat may run on another worker: that one is asked to stop it.
        if running is None and remote is not None and await remote(ctx.user, target, "chat"):
            return
        if running is None or running.kind.value != "chat":
            raise RequestError(ErrorCode.NOT_FOUND, f"no chat {target!r} of yours is running")
        self.dispatcher.cancel(ctx.user, target)

    def _system_prompt(self, access: Access, now: dt.datetime) -> str:
        lines = [
            CameraLine(c.id, c.friendly_name, tuple((z.id, z.friendly_name) for z in c.zones))
            for c in self.cameras.cameras()
            if access.can_see(c.id)
        ]
        return build_system_prompt(lines, now, access.user)

    def _now(self) -> dt.datetime:
        return dt.datetime.now(local_zone(self.settings.chat.timezone))

    async def _server_held(self, request: ChatRequest, ctx: RequestContext, access: Access) -> None:
        assert request.text is not None  # noqa: S101 - the model validator guarantees it
        conversation_id = request.conversation_id or uuid.uuid4().hex[:16]
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        self._lock_users[conversation_id] = self._lock_users.get(conversation_id, 0) + 1
        saved: str | None = conversation_id
        try:
            async with lock:
                conversation = await self._load(request, conversation_id, access)
                chain = list(conversation.messages)
                chain.append(
                    {"role": "user", "content": stamp_user_text(request.text, self._now())}
                )
                result = await self._loop(request, ctx, access, request.text).run(chain)
                conversation.messages = result.chain
                try:
                    await self.conversations.save(conversation)
                except Exception:
                    # The answer is worth more than the memory of it: send it anyway.
                    log.exception("conversation_save_failed", conversation_id=conversation_id)
                    saved = None
        finally:
            self._lock_users[conversation_id] -= 1
            if not self._lock_users[conversation_id]:
                del self._lock_users[conversation_id]
                self._locks.pop(conversation_id, None)
        await self._done(request, ctx, result, saved)

    async def _load(
        self, request: ChatRequest, conversation_id: str, access: Access
    ) -> Conversation:
        """The stored conversation, or a new one starting with the system prompt."""
        # An id we just made up names no stored conversation: skip the lookup.
        conversation = (
            await self.conversations.get(conversation_id)
            if request.conversation_id is not None
            else None
        )
        if conversation is None:
            conversation = Conversation(conversation_id, access.user)
            conversation.messages.append(
                {"role": "system", "content": self._system_prompt(access, self._now())}
            )
        elif not access.owns(conversation.user):
            raise RequestError(
                ErrorCode.FORBIDDEN, f"conversation {conversation_id!r} belongs to someone else"
            )
        return conversation

    async def _client_held(self, request: ChatRequest, ctx: RequestContext, access: Access) -> None:
        assert request.messages is not None  # noqa: S101 - the model validator guarantees it
        chain = [m.to_dict() for m in request.messages]
        if chain[0]["role"] != "system":
            chain.insert(0, {"role": "system", "content": self._system_prompt(access, self._now())})
        question = next(
            (
                m.content
                for m in reversed(request.messages)
                if m.role == "user" and isinstance(m.content, str)
            ),
            "",
        )
        result = await self._loop(request, ctx, access, question).run(chain)
        await self._done(request, ctx, result, None)

    def _loop(
        self, request: ChatRequest, ctx: RequestContext, access: Access, question: str
    ) -> ChatLoop:
        chat = self.settings.chat
        loop_settings = LoopSettings(
            max_tool_iterations=request.max_tool_iterations,
            stream=request.stream,
            enable_thinking=request.enable_thinking,
            turn_deadline_s=chat.turn_deadline_s,
        )
        tool_ctx = ToolContext(access=access, request_id=ctx.request_id, deps=self.tool_deps)
        return ChatLoop(self.providers, self.registry, tool_ctx, ctx.reply, loop_settings, question)

    async def _done(
        self, request: ChatRequest, ctx: RequestContext, result: Any, conversation_id: str | None
    ) -> None:
        if request.stream:
            await ctx.reply.send("stats", result.usage)
        message: dict[str, Any] = {"role": "assistant", "content": result.content}
        if result.reasoning:
            message["reasoning"] = result.reasoning
        body: dict[str, Any] = {
            "message": message,
            "finish_reason": result.finish_reason,
            "tool_iterations": result.iterations,
            "tool_calls": result.tool_calls,
            "conversation_id": conversation_id,
            "usage": result.usage,
        }
        if result.notes:
            body["notes"] = result.notes
        if request.text is not None and conversation_id is None:
            body["warning"] = "the conversation could not be saved; the next message starts anew"
        if request.include_messages:
            body["messages"] = result.chain
        await ctx.reply.done(body)
        log.info(
            "chat_answered",
            finish_reason=result.finish_reason,
            tool_iterations=result.iterations,
            chars=len(result.content),
            **{k: v for k, v in result.usage.items() if k in ("llm_calls", "total_ms")},
        )

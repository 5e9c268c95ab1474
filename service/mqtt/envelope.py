"""The request/reply envelope shared by every request kind.

A caller publishes JSON to ``<prefix>/<user>/<kind>``. The payload may carry ``id``
(generated when absent), ``reply_to`` and ``reply_retain``. Replies go to the MQTT 5
Response Topic (echoing Correlation Data) when the request has one, else to
``reply_to``, else to ``<prefix>/<user>/reply/<id>``. Each reply is a JSON object with
``id``, ``type`` and ``seq``; each request gets exactly one terminal reply, ``done`` or
``error``. With ``reply_retain`` the terminal reply is retained for
:data:`REPLY_RETAIN_S` seconds, for clients that can only subscribe after they publish
(Home Assistant scripts: their MQTT subscriptions go out ~0.1 s after the step that
asks for them, and lookout may have answered by then).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.mqtt.topics import is_valid_publish_topic
from service.settings import NAME_RE

log = structlog.get_logger(__name__)


class ErrorCode(StrEnum):
    """Every error code a reply may carry; the README documents each."""

    INVALID_REQUEST = "invalid_request"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_AUTH = "llm_auth"
    LLM_TIMEOUT = "llm_timeout"
    LLM_CONTEXT_OVERFLOW = "llm_context_overflow"
    LLM_ERROR = "llm_error"
    LLM_NO_IMAGES = "llm_no_images"


TERMINAL_TYPES = frozenset({"done", "error"})
REPLY_RETAIN_S = 120.0
"""How long a ``reply_retain`` terminal reply stays retained (MQTT 5 message expiry)."""
ENVELOPE_KEYS = frozenset({"id", "type", "seq", "attempt"})


class RequestError(Exception):
    """Raised by a handler to end its request with an ``error`` reply."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class Request(BaseModel):
    """Fields every request payload may carry; each kind adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, description="Caller's request id; generated when absent.")
    reply_to: str | None = Field(None, description="Topic for replies (3.1.1 clients).")
    reply_retain: bool = Field(
        False, description="Retain the terminal reply briefly, for clients that subscribe late."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        return value

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_publish_topic(value):
            raise ValueError("must be a topic without wildcards, at most 512 characters")
        return value


def new_request_id() -> str:
    """A fresh id for a request that named none."""
    return uuid.uuid4().hex[:16]


class Envelope(NamedTuple):
    """What :func:`peek_envelope` reads of a payload."""

    id: str | None
    reply_to: str | None
    reply_retain: bool = False


def peek_envelope(payload: bytes) -> Envelope:
    """Best-effort ``(id, reply_to, reply_retain)`` from a payload that may not validate.

    A request with a bad field still deserves its error reply at the place and under
    the id the caller is listening for, so these are read leniently first.
    """
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Envelope(None, None)
    if not isinstance(data, dict):
        return Envelope(None, None)
    raw_id, raw_reply = data.get("id"), data.get("reply_to")
    rid = raw_id if isinstance(raw_id, str) and NAME_RE.fullmatch(raw_id) else None
    reply = raw_reply if isinstance(raw_reply, str) and is_valid_publish_topic(raw_reply) else None
    return Envelope(rid, reply, data.get("reply_retain") is True)


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where and how replies to one request are published."""

    topic: str
    correlation_data: bytes | None = None
    retain_terminal: bool = False


class Publisher(Protocol):
    """What a reply channel needs from the bus."""

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        expiry_s: float | None = None,
    ) -> None:
        """Publish one message, waiting for the broker while it is away."""


class ReplyClosedError(RuntimeError):
    """A reply was sent after the request's terminal reply."""


class ReplyChannel:
    """Numbered replies to one request, with at most one terminal reply.

    Progress replies (``tool_call``, ``content``, ``stats``...) are published in order
    by a sender task of the channel, so the handler goes on (reading the model's
    stream, running tools) while the broker acknowledges them: a QoS 1 publish waits
    about 0.4 ms for its PUBACK, and a chat with two tool rounds sends eight replies.
    The terminal reply waits until every earlier one is acknowledged, then goes out
    itself, so ``done``/``error`` still arrives last and means everything before it was
    delivered to the broker.
    """

    def __init__(
        self, publisher: Publisher, route: ReplyRoute, request_id: str, attempt: int = 1
    ) -> None:
        self._publisher = publisher
        self.route = route
        self.request_id = request_id
        self.attempt = attempt
        """Above 1 on a cluster's re-run of a dead worker's request: every reply says so."""
        self._seq = 0
        self.terminal: str | None = None
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self.before_terminal: Callable[[bytes], Awaitable[None]] | None = None
        """Called with the terminal reply just before it is published (a cluster keeps it
        in the journal, so a worker that takes over can send it instead of a re-run)."""

    @property
    def finished(self) -> bool:
        """Whether the terminal reply has been sent."""
        return self.terminal is not None

    async def send(self, type_: str, body: dict[str, Any] | None = None) -> None:
        """Publish one reply of ``type_``; ``done`` and ``error`` close the channel.

        A progress reply is queued and returns at once; a terminal one returns once it
        and all before it reached the broker.

        Raises:
            ReplyClosedError: The terminal reply was already sent.
            ValueError: ``body`` uses an envelope key (``id``, ``type`` or ``seq``).
        """
        if self.terminal is not None:
            raise ReplyClosedError(f"request {self.request_id} already ended with {self.terminal}")
        clash = ENVELOPE_KEYS.intersection(body or ())
        if clash:
            # A body `type` would hide the terminal from the caller; refuse before claiming it.
            raise ValueError(f"reply body may not set envelope keys {sorted(clash)}")
        if type_ in TERMINAL_TYPES:
            # Claimed before the await so a concurrent sender cannot add a second one.
            self.terminal = type_
        message = {"id": self.request_id, "type": type_, "seq": self._seq, **(body or {})}
        if self.attempt > 1:
            # Its seq starts at 0 again: the caller drops what the first attempt sent.
            message["attempt"] = self.attempt
        self._seq += 1
        payload = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        if type_ not in TERMINAL_TYPES:
            if self._outbox is None:
                self._outbox = asyncio.Queue()
                self._sender = asyncio.create_task(
                    self._send_in_order(self._outbox), name=f"replies:{self.request_id}"
                )
            self._outbox.put_nowait(payload)
            return
        sender = self._sender
        if sender is not None and self._outbox is not None:
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait([sender])
            finally:
                if not sender.done():
                    # Cancelled while earlier replies were still going out: they go no further.
                    sender.cancel()
        if self.before_terminal is not None:
            try:
                await self.before_terminal(payload)
            except Exception:
                # The reply matters more than the record: without it a re-run may follow.
                log.exception("terminal_record_failed", request_id=self.request_id)
        if self.route.retain_terminal:
            await self._publisher.publish(
                self.route.topic,
                payload,
                qos=1,
                retain=True,
                correlation_data=self.route.correlation_data,
                expiry_s=REPLY_RETAIN_S,
            )
            return
        await self._publish(payload)

    async def _send_in_order(self, outbox: asyncio.Queue[bytes | None]) -> None:
        while (payload := await outbox.get()) is not None:
            try:
                await self._publish(payload)
            except Exception:
                # Task boundary: one lost progress reply must not cost the terminal one.
                log.exception("reply_publish_failed", request_id=self.request_id)

    async def _publish(self, payload: bytes) -> None:
        await self._publisher.publish(
            self.route.topic, payload, qos=1, correlation_data=self.route.correlation_data
        )

    async def done(self, body: dict[str, Any] | None = None) -> None:
        """Send the successful terminal reply."""
        await self.send("done", body)

    async def error(self, code: ErrorCode | str, message: str, **details: Any) -> None:
        """Send the failing terminal reply."""
        err: dict[str, Any] = {"code": str(code), "message": message}
        if details:
            err["details"] = details
        await self.send("error", {"error": err})

"""The route table's types: what a route is, and what a request handler is given.

Handlers are plain async functions ``handler(request_model, ctx)``; they import only
this module, never the dispatcher.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from service.mqtt.bus import Message
from service.mqtt.envelope import ErrorCode, ReplyChannel, Request
from service.mqtt.topics import RequestKind


@dataclass(slots=True)
class RequestContext:
    """What a request handler knows about the request it serves."""

    user: str
    request_id: str
    kind: RequestKind
    reply: ReplyChannel
    received_at: float
    cancel_reason: ErrorCode | None = None
    refused_reply_to: str | None = None


RequestHandler = Callable[[Any, RequestContext], Awaitable[None]]
MessageHandler = Callable[[Message], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class RequestRoute:
    """A request kind, the model its payload must fit, and the handler that serves it."""

    kind: RequestKind
    model: type[Request]
    handler: RequestHandler
    limit: int | None = None
    """Concurrent requests of this kind; beyond it `overloaded`."""
    control: bool = False
    """A control request (`chat/cancel`) acts on another request named by its ``id``: it
    is not journaled or de-duplicated, and when it succeeds the request it acts on gives
    the answer; it replies itself only with an error."""


@dataclass(frozen=True, slots=True)
class MessageRoute:
    """A subscription whose messages go to a quick inline handler."""

    filter: str
    qos: int
    matches: Callable[[str], bool]
    handler: MessageHandler
    name: str = ""


@dataclass(slots=True)
class DispatchStats:
    """Counters for `health` and the logs."""

    messages: int = 0
    requests: int = 0
    duplicates: int = 0
    overloaded: int = 0
    handler_errors: int = 0
    refused: int = 0
    unrouted: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def validation_fields(exc: ValidationError) -> list[dict[str, str]]:
    """Each problem of a payload as ``{field, problem}`` (at most 20)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(payload)", "problem": err["msg"]}
        for err in exc.errors()[:20]
    ]


def validation_message(exc: ValidationError) -> str:
    """One sentence naming every problem, for an `invalid_request` reply."""
    problems = []
    for f in validation_fields(exc):
        problem = "unknown field" if f["problem"].startswith("Extra inputs") else f["problem"]
        problems.append(f"{f['field']}: {problem}")
    return "invalid request: " + "; ".join(problems)

"""How one request is run: validation, the handler, and its one terminal reply.

Shared by the dispatcher's first runs, its replays and a cluster's takeovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import structlog
from pydantic import ValidationError

from service.mqtt.envelope import ErrorCode, RequestError
from service.mqtt.routes import (
    DispatchStats,
    RequestContext,
    RequestRoute,
    validation_fields,
    validation_message,
)

log = structlog.get_logger(__name__)


async def execute(
    ctx: RequestContext, route: RequestRoute, payload: bytes, stats: DispatchStats
) -> str:
    """Validate and run one request; every way it ends sends its terminal reply.

    Returns:
        The terminal reply's type (``done``, ``error``), for the journal.
    """
    started = time.perf_counter()
    try:
        try:
            request = route.model.model_validate_json(payload)
        except ValidationError as exc:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                validation_message(exc),
                fields=validation_fields(exc),
            ) from None
        await route.handler(request, ctx)
        if not ctx.reply.finished:
            raise RuntimeError("handler returned without a terminal reply")
    except RequestError as exc:
        await safe_error(ctx, exc.code, exc.message, **exc.details)
    except asyncio.CancelledError:
        reason = ctx.cancel_reason or ErrorCode.SHUTTING_DOWN
        text = "cancelled by the caller" if reason == ErrorCode.CANCELLED else "lookout is stopping"
        await safe_error(ctx, reason, text)
        if reason != ErrorCode.CANCELLED:
            raise
    except Exception:
        stats.handler_errors += 1
        log.exception("request_failed")
        await safe_error(ctx, ErrorCode.INTERNAL, "internal error; lookout's log has the details")
    log.info(
        "request_finished",
        outcome=ctx.reply.terminal,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return ctx.reply.terminal or "none"


async def safe_error(ctx: RequestContext, code: ErrorCode, message: str, **details: Any) -> None:
    """Send an error as the terminal reply, unless the request already has one."""
    if ctx.reply.finished:
        return
    try:
        # Shielded: a shutdown cancel must not cut off the one reply the caller waits for.
        await asyncio.shield(ctx.reply.error(code, message, **details))
    except Exception:
        log.exception("reply_failed")


async def guard(result: Awaitable[None], route: str, topic: str) -> None:
    """Await a message handler's work; its exception is logged, never raised."""
    try:
        await result
    except Exception:
        log.exception("message_handler_failed", route=route, topic=topic)

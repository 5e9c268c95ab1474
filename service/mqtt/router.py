"""Dispatch: an explicit route table from inbound topics to plain async handlers.

Two kinds of route:

* :class:`RequestRoute` for ``<prefix>/<user>/<kind>``: the envelope is read, the
  request journaled (exactly once per user and id), acknowledged, validated against the
  kind's model and handed to its handler in a task of its own. Whatever happens — a bad
  payload, a handler exception, a cancel, shutdown — the caller gets exactly one
  terminal reply.
* :class:`MessageRoute` for everything else (Frigate topics, frames): the handler is
  called inline and must be quick; its exceptions are logged and the loop lives on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from service.mqtt.bus import Message
from service.mqtt.envelope import (
    REPLY_RETAIN_S,
    ErrorCode,
    Publisher,
    ReplyChannel,
    ReplyRoute,
    RequestError,
    new_request_id,
    peek_envelope,
)
from service.mqtt.journal import Journal, JournalEntry, record_outcome, skip_entry
from service.mqtt.routes import (
    DispatchStats,
    MessageRoute,
    RequestContext,
    RequestRoute,
    validation_message,
)
from service.mqtt.serving import execute, guard, safe_error
from service.mqtt.topics import RequestKind, TopicMap

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 1024
"""Requests running at once across all kinds; beyond it callers get `overloaded`."""


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    ctx: RequestContext


class Dispatcher:
    """Routes inbound messages; owns the tasks of running requests."""

    def __init__(
        self,
        publisher: Publisher,
        topics: TopicMap,
        journal: Journal,
        request_routes: list[RequestRoute],
        message_routes: list[MessageRoute],
        admission: Callable[[str, int], RequestError | None] | None = None,
        protected_prefixes: tuple[str, ...] = (),
        share_group: str | None = None,
    ) -> None:
        self._share_group = share_group
        self._admission = admission
        self._protected = protected_prefixes
        self._publisher = publisher
        self._topics = topics
        self._journal = journal
        self._requests = {route.kind: route for route in request_routes}
        self._messages = message_routes
        self._running: dict[tuple[str, str], _Running] = {}
        self._active_by_kind: dict[RequestKind, int] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = asyncio.Event()
        """Set once :meth:`run` can take messages (tests wait on it)."""
        self.stats = DispatchStats()
        self.remote_cancel: Callable[[str, str, str], Awaitable[bool]] | None = None
        """In a cluster: cancel ``(user, request id, kind)`` on the worker that runs it."""

    def subscriptions(self) -> list[tuple[str, int]]:
        """Every filter the bus must subscribe to, requests at QoS 1."""
        subs = [(self._topics.requests[kind].filter, 1) for kind in self._requests]
        if self._share_group is not None:
            # A cluster's workers share the requests: the broker gives each to one of them.
            subs = [(f"$share/{self._share_group}/{f}", qos) for f, qos in subs]
        return subs + [(route.filter, route.qos) for route in self._messages]

    def request_filters(self) -> list[str]:
        """The request filters of :meth:`subscriptions` (shared in a cluster)."""
        count = len(self._requests)
        return [f for f, _ in self.subscriptions()[:count]]

    def capacity(self) -> int:
        """How many more requests may start now (for a cluster's takeovers)."""
        free = MAX_IN_FLIGHT - len(self._running)
        for kind, route in self._requests.items():
            if route.limit is not None:
                free = min(free, route.limit - self._active_by_kind.get(kind, 0))
        return max(0, free) if self._tg is not None else 0

    def claim(self, entries: list[JournalEntry]) -> None:
        """Run requests taken over from a dead worker (already journaled as ours).

        One whose terminal reply was already written is not run again: that reply is
        sent (again, when the dead worker got it out: an identical QoS 1 copy).
        """
        for entry in entries:
            if entry.terminal is None:
                self._replay(entry)
            else:
                self._spawn(self._resend_terminal(entry), f"resend:{entry.user}:{entry.id}")

    async def _resend_terminal(self, entry: JournalEntry) -> None:
        assert entry.terminal is not None  # noqa: S101 - claim() checks
        retain = peek_envelope(entry.payload).reply_retain
        await self._publisher.publish(
            entry.reply_topic,
            entry.terminal,
            qos=1,
            retain=retain,
            correlation_data=entry.correlation_data,
            expiry_s=REPLY_RETAIN_S if retain else None,
        )
        outcome = str(json.loads(entry.terminal).get("type", "done"))
        log.info("terminal_resent", user=entry.user, request_id=entry.id, outcome=outcome)
        await record_outcome(self._journal, entry.user, entry.id, outcome)

    async def run(self, messages: Any, replay: list[JournalEntry] | None = None) -> None:
        """Dispatch until cancelled; cancelling ends every running request with `shutting_down`.

        Args:
            messages: An async iterator of :class:`Message` (the bus's inbox).
            replay: Journaled requests that never got their terminal reply; run them first.
        """
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._ready.set()
            for entry in replay or []:
                self._replay(entry)
            try:
                async for message in messages:
                    self.dispatch(message)
            except asyncio.CancelledError:
                # The group refuses new tasks from here on; overflow() must not try one.
                self._tg = None
                self._cancel_all(ErrorCode.SHUTTING_DOWN)
                raise

    def running(self, user: str, request_id: str) -> RequestContext | None:
        """The context of a running request, if any."""
        entry = self._running.get((user, request_id))
        return entry.ctx if entry is not None else None

    def cancel(self, user: str, request_id: str, reason: ErrorCode = ErrorCode.CANCELLED) -> bool:
        """Stop a running request; it ends with an error reply of ``reason``."""
        entry = self._running.get((user, request_id))
        if entry is None or entry.ctx.reply.finished:
            return False
        entry.ctx.cancel_reason = reason
        entry.task.cancel()
        return True

    def _cancel_all(self, reason: ErrorCode) -> None:
        for entry in list(self._running.values()):
            entry.ctx.cancel_reason = reason
            entry.task.cancel()

    # -- dispatch --------------------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        """Route one message; never raises."""
        self.stats.messages += 1
        try:
            parsed = self._topics.request_kind(message.topic)
            if parsed is not None and parsed[0] in self._requests:
                self._on_request(parsed[0], parsed[1], message)
                return
            for route in self._messages:
                if route.matches(message.topic):
                    result = route.handler(message)
                    if result is not None:
                        self._spawn(guard(result, route.name, message.topic), f"msg:{route.name}")
                    break
            else:
                self.stats.unrouted += 1
            message.ack()
        except Exception:
            self.stats.handler_errors += 1
            log.exception("message_handler_failed", topic=message.topic, size=len(message.payload))
            message.ack()

    def overflow(self, message: Message) -> None:
        """Called by the bus when its inbox is full: requests still get an answer."""
        parsed = self._topics.request_kind(message.topic)
        if parsed is None or self._tg is None:
            message.ack()
            return
        ctx = self._context(parsed[0], parsed[1], message)
        if (ctx.user, ctx.request_id) in self._running:
            # A redelivered copy of a running request: its one reply is still to come.
            self.stats.duplicates += 1
            message.ack()
            return
        self.stats.overloaded += 1
        self._spawn(self._refuse(ctx, message, "lookout's inbound queue is full"), "overloaded")

    def _context(self, kind: RequestKind, user: str, message: Message) -> RequestContext:
        request_id, reply_to, reply_retain = peek_envelope(message.payload)
        request_id = request_id or new_request_id()
        asked = message.response_topic or reply_to
        refused = None
        if asked is not None and not self._topics.reply_allowed(user, asked, self._protected):
            # Answer where the caller can always listen, and say why.
            refused = asked
            asked = None
        topic = asked or self._topics.default_reply(user, request_id)
        route = ReplyRoute(topic, message.correlation_data, retain_terminal=reply_retain)
        return RequestContext(
            user=user,
            request_id=request_id,
            kind=kind,
            reply=ReplyChannel(self._publisher, route, request_id),
            received_at=time.time(),
            refused_reply_to=refused,
        )

    def _on_request(self, kind: RequestKind, user: str, message: Message) -> None:
        ctx = self._context(kind, user, message)
        self.stats.requests += 1
        self.stats.by_kind[kind.value] = self.stats.by_kind.get(kind.value, 0) + 1
        route = self._requests[kind]
        refusal = self._admit(ctx, len(message.payload))
        if refusal is not None:
            self._spawn(self._reject(ctx, message, refusal), f"refused:{kind.value}")
            return
        if route.control:
            self._spawn(self._control(ctx, route, message), f"ctl:{kind.value}:{user}")
            return
        if (ctx.user, ctx.request_id) in self._running:
            # Checked before the limits: refusing a redelivered copy with `overloaded`
            # would give the running request a second terminal reply.
            self.stats.duplicates += 1
            message.ack()
            log.info("request_duplicate", user=user, request_id=ctx.request_id)
            return
        busy = len(self._running) >= MAX_IN_FLIGHT or (
            route.limit is not None and self._active_by_kind.get(kind, 0) >= route.limit
        )
        if busy:
            self.stats.overloaded += 1
            self._spawn(self._refuse(ctx, message, "too many requests in flight"), "overloaded")
            return
        entry = JournalEntry(
            user=user,
            id=ctx.request_id,
            kind=kind.value,
            topic=message.topic,
            payload=message.payload,
            reply_topic=ctx.reply.route.topic,
            correlation_data=ctx.reply.route.correlation_data,
            received_at=ctx.received_at,
        )
        self._start(ctx, route, message.payload, entry, message)

    def _admit(self, ctx: RequestContext, size: int) -> RequestError | None:
        if ctx.refused_reply_to is not None:
            return RequestError(
                ErrorCode.INVALID_REQUEST,
                f"lookout does not publish replies to {ctx.refused_reply_to!r}: use a topic "
                "outside lookout's and Frigate's, or one under your own lookout/<user>/",
            )
        return self._admission(ctx.user, size) if self._admission is not None else None

    async def _reject(self, ctx: RequestContext, message: Message, error: RequestError) -> None:
        self.stats.refused += 1
        try:
            await safe_error(ctx, error.code, error.message, **error.details)
        finally:
            message.ack()

    def _replay(self, entry: JournalEntry) -> None:
        try:
            kind = RequestKind(entry.kind)
        except ValueError:
            log.warning("journal_entry_unknown_kind", kind=entry.kind, request_id=entry.id)
            self._spawn(skip_entry(self._journal, entry), "replay-skip")
            return
        route = self._requests.get(kind)
        ctx = RequestContext(
            user=entry.user,
            request_id=entry.id,
            kind=kind,
            reply=ReplyChannel(
                self._publisher,
                ReplyRoute(entry.reply_topic, entry.correlation_data),
                entry.id,
                entry.attempt,
            ),
            received_at=entry.received_at,
        )
        log.info(
            "request_replayed",
            user=entry.user,
            request_id=entry.id,
            kind=entry.kind,
            attempt=entry.attempt,
        )
        if route is None:
            self._spawn(self._refuse(ctx, None, f"unknown kind {entry.kind}"), "replay")
            self._spawn(skip_entry(self._journal, entry), "replay-skip")
            return
        self._start(ctx, route, entry.payload, None, None)

    def _start(
        self,
        ctx: RequestContext,
        route: RequestRoute,
        payload: bytes,
        entry: JournalEntry | None,
        message: Message | None,
    ) -> None:
        name = f"req:{ctx.kind.value}:{ctx.user}:{ctx.request_id}"
        task = self._spawn(self._serve(ctx, route, payload, entry, message), name)
        self._running[(ctx.user, ctx.request_id)] = _Running(task, ctx)
        self._active_by_kind[ctx.kind] = self._active_by_kind.get(ctx.kind, 0) + 1

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        if self._tg is None:
            raise RuntimeError("dispatcher is not running")
        task: asyncio.Task[None] = self._tg.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no request, refusal or handler task is running."""
        await self._idle.wait()

    async def _control(self, ctx: RequestContext, route: RequestRoute, message: Message) -> None:
        message.ack()
        with structlog.contextvars.bound_contextvars(
            request_id=ctx.request_id, user=ctx.user, kind=ctx.kind.value
        ):
            try:
                request = route.model.model_validate_json(message.payload)
                await route.handler(request, ctx)
            except ValidationError as exc:
                await safe_error(ctx, ErrorCode.INVALID_REQUEST, validation_message(exc))
            except RequestError as exc:
                await safe_error(ctx, exc.code, exc.message, **exc.details)
            except Exception:
                log.exception("request_failed")
                await safe_error(ctx, ErrorCode.INTERNAL, "internal error")

    async def _refuse(self, ctx: RequestContext, message: Message | None, why: str) -> None:
        try:
            await safe_error(ctx, ErrorCode.OVERLOADED, f"overloaded: {why}; try again later")
        finally:
            if message is not None:
                message.ack()

    async def _serve(
        self,
        ctx: RequestContext,
        route: RequestRoute,
        payload: bytes,
        entry: JournalEntry | None,
        message: Message | None,
    ) -> None:
        key = (ctx.user, ctx.request_id)
        outcome = "error"
        journaled = False
        with structlog.contextvars.bound_contextvars(
            request_id=ctx.request_id, user=ctx.user, kind=ctx.kind.value
        ):
            try:
                if entry is not None:
                    try:
                        journaled = await self._journal.begin(entry)
                    except asyncio.CancelledError:
                        if message is not None:
                            message.ack()
                        reason = ctx.cancel_reason or ErrorCode.SHUTTING_DOWN
                        text = (
                            "cancelled by the caller"
                            if reason == ErrorCode.CANCELLED
                            else "lookout is stopping"
                        )
                        await safe_error(ctx, reason, text)
                        if reason == ErrorCode.CANCELLED:
                            return
                        raise
                    except Exception:
                        # Without the journal we cannot promise exactly-once: say so, and
                        # let the broker have its ack so the message is not redelivered forever.
                        log.exception("journal_write_failed")
                        if message is not None:
                            message.ack()
                        await safe_error(
                            ctx, ErrorCode.UNAVAILABLE, "lookout's store is unavailable; try again"
                        )
                        return
                    if message is not None:
                        message.ack()
                    if not journaled:
                        self.stats.duplicates += 1
                        log.info("request_duplicate")
                        return
                else:
                    journaled = True
                if self._journal.worker_id is not None:
                    # A cluster: the terminal reply is journaled before it goes out.
                    ctx.reply.before_terminal = functools.partial(
                        self._journal.record_terminal, ctx.user, ctx.request_id
                    )
                outcome = await execute(ctx, route, payload, self.stats)
            finally:
                self._running.pop(key, None)
                self._active_by_kind[ctx.kind] -= 1
                if journaled:
                    await record_outcome(self._journal, ctx.user, ctx.request_id, outcome)

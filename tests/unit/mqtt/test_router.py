"""The dispatcher: one terminal reply per request, exactly-once execution, every message acked.

A fake publisher records replies (and can block or fail); the journal is the real one on
an in-memory SQLite database. Waits are on events with timeouts, never on the clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
import structlog
import structlog.testing

from service.mqtt import router as router_module
from service.mqtt.bus import Message
from service.mqtt.envelope import ErrorCode, Request, RequestError
from service.mqtt.journal import Journal, JournalEntry, requests_table
from service.mqtt.router import Dispatcher
from service.mqtt.routes import MessageRoute, RequestContext, RequestRoute
from service.mqtt.topics import RequestKind, TopicMap
from service.store.db import create_engine, create_tables

WAIT = 5.0


# -- fakes ----------------------------------------------------------------------------


class FakePublisher:
    """Records every publish; ``gate`` holds publishes, ``fail`` makes them raise."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self.fail = False
        self._changed = asyncio.Event()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        self.replies.append(
            {"topic": topic, "body": json.loads(payload), "qos": qos, "corr": correlation_data}
        )
        self._changed.set()

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.replies if r["body"]["id"] == request_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def terminal(self, request_id: str) -> dict[str, Any]:
        """Wait for and return the terminal reply of ``request_id``."""

        def ended() -> bool:
            return any(b["type"] in ("done", "error") for b in self.of(request_id))

        await self.wait_for(ended)
        return next(b for b in self.of(request_id) if b["type"] in ("done", "error"))


class Ack:
    """Counts acknowledgements of one message."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.event.wait(), WAIT)


def message(
    topic: str,
    payload: bytes | dict[str, Any],
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> tuple[Message, Ack]:
    ack = Ack()
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    msg = Message(
        topic=topic,
        payload=raw,
        qos=1,
        response_topic=response_topic,
        correlation_data=correlation_data,
        _ack=ack,
    )
    return msg, ack


class EchoRequest(Request):
    """A request kind whose payload tells the handler what to do."""

    mode: Literal["done", "request_error", "crash", "silent", "block", "progress", "swallow"] = (
        "done"
    )
    text: str = ""


class Handlers:
    """The request handler; records calls and lets tests hold requests open."""

    def __init__(self) -> None:
        self.calls: list[tuple[EchoRequest, RequestContext]] = []
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release = asyncio.Event()
        self.cancelled: list[str] = []

    async def handle(self, request: EchoRequest, ctx: RequestContext) -> None:
        self.calls.append((request, ctx))
        self.started[f"{ctx.user}/{ctx.request_id}"].set()
        mode = request.mode
        if mode == "request_error":
            raise RequestError(ErrorCode.NOT_FOUND, "no such camera", camera=request.text)
        if mode == "crash":
            raise ZeroDivisionError("handler bug")
        if mode == "silent":
            return
        if mode == "progress":
            await ctx.reply.send("progress", {"step": 1})
        if mode in ("block", "swallow"):
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(ctx.request_id)
                if mode == "block":
                    raise
        await ctx.reply.done({"echo": request.text, "user": ctx.user})

    async def wait_started(self, user: str, request_id: str) -> None:
        await asyncio.wait_for(self.started[f"{user}/{request_id}"].wait(), WAIT)


async def spawned_tasks_done(*also_skip: asyncio.Task[Any] | None) -> None:
    """Wait until every task the dispatcher spawned (requests, handlers) has ended."""
    while True:
        mine = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task()
            and t not in also_skip
            and t.get_name().startswith(("req:", "msg:", "overloaded", "replay", "ctl:"))
        ]
        if not mine:
            return
        await asyncio.wait(mine)


class Harness:
    """A running dispatcher with an inbox the test feeds."""

    def __init__(
        self,
        journal: Journal,
        *,
        limits: dict[RequestKind, int] | None = None,
        message_routes: list[MessageRoute] | None = None,
        prefix: str = "lookout",
    ) -> None:
        self.publisher = FakePublisher()
        self.handlers = Handlers()
        self.journal = journal
        self.topics = TopicMap(prefix)
        limits = limits or {}
        routes = [
            RequestRoute(kind, EchoRequest, self.handlers.handle, limit=limits.get(kind))
            for kind in (RequestKind.HEALTH, RequestKind.CHAT, RequestKind.TOOL)
        ]
        self.dispatcher = Dispatcher(
            self.publisher, self.topics, journal, routes, message_routes or []
        )
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            msg = await self.inbox.get()
            yield msg
            # Resumed when run() asks for the next one, i.e. once this one is dispatched.
            self.inbox.task_done()

    async def start(self, replay: list[JournalEntry] | None = None) -> None:
        self.task = asyncio.create_task(
            self.dispatcher.run(self._messages(), replay), name="test-dispatch"
        )
        await asyncio.wait_for(self.dispatcher._ready.wait(), WAIT)

    def send(
        self,
        user: str,
        payload: bytes | dict[str, Any],
        kind: str = "health",
        **kwargs: Any,
    ) -> Ack:
        msg, ack = message(f"{self.topics.prefix}/{user}/{kind}", payload, **kwargs)
        self.inbox.put_nowait(msg)
        return ack

    async def settle(self) -> None:
        """Wait until the inbox is empty and every task the dispatcher spawned has ended."""
        async with asyncio.timeout(WAIT):
            await self.inbox.join()
            await spawned_tasks_done(self.task)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(self.task, WAIT)

    async def close(self) -> None:
        """Let every request finish, then stop (unless the test already stopped it).

        Stopping while a request is still writing its journal row would cut that write
        off (see the xfail test below), so teardown drains first.
        """
        if self.task is None or self.task.done():
            return
        self.handlers.release.set()
        self.publisher.fail = False
        if self.publisher.gate is not None:
            self.publisher.gate.set()
        await self.settle()
        await self.stop()


@asynccontextmanager
async def started(
    journal: Journal, replay: list[JournalEntry] | None = None, **kwargs: Any
) -> AsyncIterator[Harness]:
    harness = Harness(journal, **kwargs)
    await harness.start(replay)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    eng = create_engine("sqlite:///:memory:")
    await create_tables(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
async def journal(engine: Any) -> Journal:
    return Journal(engine)


@pytest.fixture
async def h(journal: Journal) -> AsyncIterator[Harness]:
    async with started(journal) as harness:
        yield harness


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Captured structlog events, whatever another test configured before."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    # A logger cached by an earlier configure() would bypass the capture; use a fresh one.
    monkeypatch.setattr(router_module, "log", structlog.get_logger(router_module.__name__))
    with structlog.testing.capture_logs() as entries:
        yield entries
    structlog.configure(**saved)


# -- requests: the happy path and its three reply routes -------------------------------


async def test_valid_request_reaches_its_handler_and_gets_done_on_the_default_topic(h):
    ack = h.send("alice", {"id": "r1", "text": "hi"})
    done = await h.publisher.terminal("r1")
    assert done == {"id": "r1", "type": "done", "seq": 0, "echo": "hi", "user": "alice"}
    ((request, ctx),) = h.handlers.calls
    assert isinstance(request, EchoRequest) and request.text == "hi" and request.id == "r1"
    assert (ctx.user, ctx.request_id, ctx.kind) == ("alice", "r1", RequestKind.HEALTH)
    assert h.publisher.replies[0]["topic"] == "lookout/alice/reply/r1"
    assert h.publisher.replies[0]["corr"] is None and h.publisher.replies[0]["qos"] == 1
    await h.settle()
    assert ack.count == 1
    assert await h.journal.unfinished() == []  # finished in the journal
    assert h.dispatcher.stats.requests == 1
    assert h.dispatcher.stats.by_kind == {"health": 1}


async def test_a_request_without_id_gets_a_generated_one(h):
    h.send("alice", {"text": "x"})
    await h.publisher.wait_for(lambda: len(h.publisher.replies) == 1)
    (reply,) = h.publisher.replies
    rid = reply["body"]["id"]
    assert reply["topic"] == f"lookout/alice/reply/{rid}"
    assert h.handlers.calls[0][1].request_id == rid
    assert h.handlers.calls[0][0].id is None


async def test_reply_to_in_the_payload_routes_the_replies(h):
    h.send("ha", {"id": "r2", "reply_to": "ha/answers", "mode": "progress"})
    await h.publisher.terminal("r2")
    assert [r["topic"] for r in h.publisher.replies] == ["ha/answers", "ha/answers"]
    assert [r["body"]["seq"] for r in h.publisher.replies] == [0, 1]


async def test_mqtt5_response_topic_wins_and_correlation_data_is_echoed(h):
    h.send(
        "v5",
        {"id": "r3", "reply_to": "ignored/topic", "mode": "progress"},
        response_topic="v5/rt",
        correlation_data=b"\x00corr",
    )
    await h.publisher.terminal("r3")
    assert [(r["topic"], r["corr"]) for r in h.publisher.replies] == [
        (
            "v5/rt",
            b"\x00corr",
        )
    ] * 2


async def test_each_kind_goes_to_its_route_and_the_caller_is_parsed_from_the_topic(h):
    h.send("bob", {"id": "c1"}, kind="chat")
    h.send("bob", {"id": "t1"}, kind="tool")
    await h.publisher.terminal("c1")
    await h.publisher.terminal("t1")
    kinds = sorted(ctx.kind.value for _req, ctx in h.handlers.calls)
    assert kinds == ["chat", "tool"]
    assert h.dispatcher.stats.by_kind == {"chat": 1, "tool": 1}


def test_subscriptions_cover_every_request_kind_and_message_route(journal):
    route = MessageRoute("frigate/events", 0, lambda t: t == "frigate/events", lambda m: None)
    harness = Harness(journal, message_routes=[route], prefix="home/lookout")
    assert harness.dispatcher.subscriptions() == [
        ("home/lookout/+/health", 1),
        ("home/lookout/+/chat", 1),
        ("home/lookout/+/tool", 1),
        ("frigate/events", 0),
    ]


# -- bad requests -----------------------------------------------------------------------


async def test_invalid_json_gets_exactly_one_invalid_request_error(h):
    ack = h.send("eve", b"\xff not json")
    await h.publisher.wait_for(lambda: len(h.publisher.replies) == 1)
    await h.settle()
    (reply,) = h.publisher.replies
    body = reply["body"]
    assert body["type"] == "error" and body["error"]["code"] == "invalid_request"
    assert body["error"]["message"].startswith("invalid request: (payload): Invalid JSON")
    assert body["error"]["details"]["fields"][0]["field"] == "(payload)"
    assert reply["topic"] == f"lookout/eve/reply/{body['id']}"
    assert h.handlers.calls == []
    assert ack.count == 1


async def test_an_unknown_field_is_named_and_the_callers_id_and_route_kept(h):
    ack = h.send("eve", {"id": "x1", "reply_to": "eve/answers", "bogus": 1, "mode": 5})
    err = await h.publisher.terminal("x1")
    await h.settle()
    assert h.publisher.of("x1") == [err]
    assert h.publisher.replies[0]["topic"] == "eve/answers"
    assert err["error"]["code"] == "invalid_request"
    assert "bogus: unknown field" in err["error"]["message"]
    assert "mode: " in err["error"]["message"]
    fields = {f["field"] for f in err["error"]["details"]["fields"]}
    assert fields == {"bogus", "mode"}
    assert h.handlers.calls == []
    assert ack.count == 1


async def test_a_deeply_nested_payload_is_an_invalid_request_not_a_crash(h):
    deep = b'{"id": "d1", "text": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    h.send("eve", deep)
    await h.publisher.wait_for(lambda: len(h.publisher.replies) == 1)
    assert h.publisher.replies[0]["body"]["error"]["code"] == "invalid_request"
    h.send("eve", {"id": "after"})
    assert (await h.publisher.terminal("after"))["type"] == "done"


# -- handler outcomes ------------------------------------------------------------------


async def test_request_error_from_the_handler_becomes_that_error(h):
    h.send("alice", {"id": "e1", "mode": "request_error", "text": "garage"})
    err = await h.publisher.terminal("e1")
    assert err["error"] == {
        "code": "not_found",
        "message": "no such camera",
        "details": {"camera": "garage"},
    }


async def test_a_crashing_handler_gives_internal_and_the_dispatcher_keeps_serving(h, logs):
    ack = h.send("alice", {"id": "boom", "mode": "crash"})
    err = await h.publisher.terminal("boom")
    assert err["error"]["code"] == "internal"
    assert "handler bug" not in err["error"]["message"]  # no internals leak to callers
    h.send("alice", {"id": "next"})
    assert (await h.publisher.terminal("next"))["type"] == "done"
    await h.settle()
    assert ack.count == 1
    assert h.dispatcher.stats.handler_errors == 1
    failed = [e for e in logs if e["event"] == "request_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and failed[0]["exc_info"]
    assert await h.journal.unfinished() == []


async def test_a_handler_that_returns_without_a_terminal_reply_gives_internal(h):
    h.send("alice", {"id": "quiet", "mode": "silent"})
    err = await h.publisher.terminal("quiet")
    await h.settle()
    assert err["error"]["code"] == "internal"
    assert h.publisher.of("quiet") == [err]


async def test_a_reply_that_cannot_be_published_is_logged_and_the_worker_lives(h, logs):
    h.publisher.fail = True
    h.send("alice", {"id": "lost"})
    await h.handlers.wait_started("alice", "lost")
    await h.settle()
    assert any(e["event"] in ("request_failed", "reply_failed") for e in logs)
    h.publisher.fail = False
    h.send("alice", {"id": "fine"})
    assert (await h.publisher.terminal("fine"))["type"] == "done"


# -- exactly once ----------------------------------------------------------------------


async def test_a_duplicate_while_running_runs_once_and_gets_no_second_reply(h):
    first = h.send("alice", {"id": "dup", "mode": "block"})
    await h.handlers.wait_started("alice", "dup")
    second = h.send("alice", {"id": "dup", "mode": "block"})
    await second.wait()  # acked without a reply
    assert h.publisher.replies == []
    h.handlers.release.set()
    await h.publisher.terminal("dup")
    await h.settle()
    assert len(h.handlers.calls) == 1
    assert [b["type"] for b in h.publisher.of("dup")] == ["done"]
    assert (first.count, second.count) == (1, 1)
    assert h.dispatcher.stats.duplicates == 1


async def test_a_duplicate_after_finishing_runs_once_and_gets_no_second_reply(h):
    h.send("alice", {"id": "again"})
    await h.publisher.terminal("again")
    await h.settle()
    redelivered = h.send("alice", {"id": "again", "text": "different body, same id"})
    await h.settle()
    assert redelivered.count == 1
    assert len(h.handlers.calls) == 1
    assert len(h.publisher.of("again")) == 1
    assert h.dispatcher.stats.duplicates == 1


async def test_the_same_id_from_different_users_are_different_requests(h):
    h.send("alice", {"id": "same", "text": "a"})
    h.send("bob", {"id": "same", "text": "b"})
    await h.publisher.wait_for(lambda: len(h.publisher.replies) == 2)
    got = {r["topic"]: r["body"]["echo"] for r in h.publisher.replies}
    assert got == {"lookout/alice/reply/same": "a", "lookout/bob/reply/same": "b"}
    assert len(h.handlers.calls) == 2


# -- limits, cancel, shutdown ----------------------------------------------------------


async def test_per_kind_limit_gives_overloaded_and_other_kinds_are_unaffected(journal):
    async with started(journal, limits={RequestKind.CHAT: 1}) as h:
        h.send("alice", {"id": "c1", "mode": "block"}, kind="chat")
        await h.handlers.wait_started("alice", "c1")
        refused = h.send("bob", {"id": "c2", "mode": "block"}, kind="chat")
        err = await h.publisher.terminal("c2")
        assert err["error"]["code"] == "overloaded"
        assert h.publisher.replies[0]["topic"] == "lookout/bob/reply/c2"
        await refused.wait()
        h.send("bob", {"id": "t1"}, kind="tool")
        assert (await h.publisher.terminal("t1"))["type"] == "done"
        h.handlers.release.set()
        assert (await h.publisher.terminal("c1"))["type"] == "done"
        await h.settle()
        # The slot is free again.
        h.send("bob", {"id": "c3"}, kind="chat")
        assert (await h.publisher.terminal("c3"))["type"] == "done"
        assert [ctx.request_id for _r, ctx in h.handlers.calls] == ["c1", "t1", "c3"]
        assert h.dispatcher.stats.overloaded == 1
        assert refused.count == 1


async def test_a_redelivery_while_the_kind_is_at_its_limit_is_a_duplicate_not_overloaded(journal):
    async with started(journal, limits={RequestKind.CHAT: 1}) as h:
        h.send("alice", {"id": "long", "mode": "block"}, kind="chat")
        await h.handlers.wait_started("alice", "long")
        again = h.send("alice", {"id": "long", "mode": "block"}, kind="chat")
        await again.wait()
        h.handlers.release.set()
        await h.publisher.terminal("long")
        await h.settle()
        # One terminal for the id: an `overloaded` here would be a second one.
        assert [b["type"] for b in h.publisher.of("long")] == ["done"]
        assert h.dispatcher.stats.duplicates == 1


async def test_cancel_ends_a_running_request_with_cancelled(h):
    h.send("alice", {"id": "slow", "mode": "block"})
    await h.handlers.wait_started("alice", "slow")
    ctx = h.dispatcher.running("alice", "slow")
    assert ctx is not None and ctx.request_id == "slow"
    assert h.dispatcher.cancel("alice", "slow") is True
    err = await h.publisher.terminal("slow")
    assert err["error"]["code"] == "cancelled"
    await h.settle()
    assert h.handlers.cancelled == ["slow"]
    assert h.dispatcher.running("alice", "slow") is None
    assert h.dispatcher.cancel("alice", "slow") is False  # finished
    assert h.dispatcher.cancel("alice", "never") is False  # unknown
    assert await h.journal.unfinished() == []
    # The dispatcher still serves.
    h.send("alice", {"id": "after"})
    assert (await h.publisher.terminal("after"))["type"] == "done"


async def test_a_handler_that_swallows_the_cancel_still_ends_once(h):
    h.send("alice", {"id": "stubborn", "mode": "swallow"})
    await h.handlers.wait_started("alice", "stubborn")
    assert h.dispatcher.cancel("alice", "stubborn", ErrorCode.TIMEOUT) is True
    await h.publisher.terminal("stubborn")
    await h.settle()
    assert len([b for b in h.publisher.of("stubborn") if b["type"] in ("done", "error")]) == 1


async def test_stopping_the_dispatcher_answers_every_running_request_with_shutting_down(journal):
    async with started(journal) as h:
        for rid in ("s1", "s2", "s3"):
            h.send("alice", {"id": rid, "mode": "block"}, kind="chat")
        for rid in ("s1", "s2", "s3"):
            await h.handlers.wait_started("alice", rid)
        await h.stop()
        for rid in ("s1", "s2", "s3"):
            (reply,) = h.publisher.of(rid)
            assert reply["type"] == "error" and reply["error"]["code"] == "shutting_down"
        assert sorted(h.handlers.cancelled) == ["s1", "s2", "s3"]
        # Each was told; none is replayed on the next start.
        assert await journal.unfinished() == []


async def test_the_shutting_down_reply_survives_a_slow_publish(journal):
    async with started(journal) as h:
        h.send("alice", {"id": "slowpub", "mode": "block"})
        await h.handlers.wait_started("alice", "slowpub")
        h.publisher.gate = asyncio.Event()
        assert h.task is not None
        h.task.cancel()
        await asyncio.wait_for(h.publisher.waiting.wait(), WAIT)
        assert not h.task.done()  # still waiting for the reply to get out
        h.publisher.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(h.task, WAIT)
        assert h.publisher.of("slowpub")[0]["error"]["code"] == "shutting_down"


# -- overflow --------------------------------------------------------------------------


async def test_overflow_of_a_request_gets_overloaded_and_is_acked(h):
    msg, ack = message("lookout/alice/health", {"id": "full", "reply_to": "a/answers"})
    h.dispatcher.overflow(msg)
    err = await h.publisher.terminal("full")
    assert err["error"]["code"] == "overloaded"
    assert h.publisher.replies[0]["topic"] == "a/answers"
    await ack.wait()
    await h.settle()
    assert ack.count == 1
    assert h.handlers.calls == []
    assert h.dispatcher.stats.overloaded == 1


async def test_overflow_of_a_redelivered_running_request_is_not_a_second_reply(h):
    h.send("alice", {"id": "busy", "mode": "block"})
    await h.handlers.wait_started("alice", "busy")
    msg, ack = message("lookout/alice/health", {"id": "busy"})
    h.dispatcher.overflow(msg)
    await ack.wait()
    h.handlers.release.set()
    await h.publisher.terminal("busy")
    await h.settle()
    assert [b["type"] for b in h.publisher.of("busy")] == ["done"]
    assert ack.count == 1


async def test_overflow_before_the_dispatcher_runs_just_acks(journal):
    h = Harness(journal)
    msg, ack = message("lookout/alice/health", {"id": "early"})
    h.dispatcher.overflow(msg)
    assert ack.count == 1
    assert h.publisher.replies == []


async def test_overflow_of_another_message_is_just_acked(h):
    msg, ack = message("frigate/events", {"type": "new"})
    h.dispatcher.overflow(msg)
    assert ack.count == 1
    msg, ack = message("lookout/camera/health", {"id": "cam"})  # reserved: not a request
    h.dispatcher.overflow(msg)
    assert ack.count == 1
    await h.settle()
    assert h.publisher.replies == []


async def test_overflow_while_the_dispatcher_stops_does_not_raise(journal):
    async with started(journal) as h:
        h.send("alice", {"id": "held", "mode": "block"})
        await h.handlers.wait_started("alice", "held")
        h.publisher.gate = asyncio.Event()
        assert h.task is not None
        h.task.cancel()
        await asyncio.wait_for(h.publisher.waiting.wait(), WAIT)  # mid-shutdown now
        late, ack = message("lookout/bob/health", {"id": "late"})
        h.dispatcher.overflow(late)  # the bus calls this from its own task: it must not raise
        h.publisher.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(h.task, WAIT)
        after, ack_after = message("lookout/bob/health", {"id": "after"})
        h.dispatcher.overflow(after)
        assert h.publisher.of("late") == [] and h.publisher.of("after") == []
        assert (ack.count, ack_after.count) == (1, 1)
        assert h.publisher.of("held")[0]["error"]["code"] == "shutting_down"


# -- message routes --------------------------------------------------------------------


async def test_message_routes_call_sync_and_async_handlers_and_count_the_unrouted(journal, logs):
    sync_seen: list[str] = []
    async_seen: list[str] = []
    async_done = asyncio.Event()

    def on_event(m: Message) -> None:
        sync_seen.append(m.topic)
        if m.payload == b"bad":
            raise ValueError("cannot parse")

    async def on_state(m: Message) -> None:
        async_seen.append(m.topic)
        async_done.set()
        if m.payload == b"bad":
            raise ValueError("cannot parse either")

    routes = [
        MessageRoute("frigate/events", 1, lambda t: t == "frigate/events", on_event, "events"),
        MessageRoute("frigate/+/+/state", 0, lambda t: t.endswith("/state"), on_state, "state"),
        # Never reached for frigate/events: the first matching route wins.
        MessageRoute("frigate/#", 0, lambda t: t.startswith("frigate/"), on_event, "catchall"),
    ]
    async with started(journal, message_routes=routes) as h:
        acks = []
        for topic, payload in [
            ("frigate/events", b"ok"),
            ("frigate/events", b"bad"),
            ("frigate/front/detect/state", b"bad"),
            ("frigate/front/detect/state", b"ON"),
            ("somewhere/else", b"x"),
            ("lookout/alice/watch", b"{}"),  # a kind without a route is not a request here
        ]:
            msg, ack = message(topic, payload)
            acks.append(ack)
            h.inbox.put_nowait(msg)
        await asyncio.wait_for(async_done.wait(), WAIT)
        await h.settle()
        assert sync_seen == ["frigate/events", "frigate/events"]
        assert async_seen == ["frigate/front/detect/state"] * 2
        assert [a.count for a in acks] == [1] * 6
        stats = h.dispatcher.stats
        assert (stats.messages, stats.unrouted, stats.handler_errors) == (6, 2, 1)
        failed = [e for e in logs if e["event"] == "message_handler_failed"]
        assert len(failed) == 2  # one sync, one async; both logged, neither raised
        assert {e.get("route") for e in failed} == {None, "state"}
        h.send("alice", {"id": "alive"})
        assert (await h.publisher.terminal("alive"))["type"] == "done"


# -- journal: replay and failure -------------------------------------------------------


async def test_replay_runs_interrupted_requests_and_replies_to_their_stored_route(journal):
    stored = [
        JournalEntry(
            user="carol",
            id=f"old{i}",
            kind="health",
            topic="lookout/carol/health",
            payload=json.dumps({"id": f"old{i}", "text": f"t{i}"}).encode(),
            reply_topic="carol/rr",
            correlation_data=b"c%d" % i,
            received_at=time.time() - 10 + i,
        )
        for i in range(2)
    ]
    for e in stored:
        assert await journal.begin(e)
    async with started(journal, replay=await journal.unfinished()) as h:
        for i in range(2):
            done = await h.publisher.terminal(f"old{i}")
            assert done["echo"] == f"t{i}"
        await h.settle()
        assert [(r["topic"], r["corr"]) for r in h.publisher.replies] == [
            ("carol/rr", b"c0"),
            ("carol/rr", b"c1"),
        ]
        assert await journal.unfinished() == []
        # The redelivered original is a duplicate now.
        again = h.send("carol", {"id": "old0", "text": "t0"})
        await h.settle()
        assert again.count == 1 and len(h.handlers.calls) == 2


async def test_replay_of_a_kind_without_a_route_is_refused(journal):
    entry = JournalEntry(
        user="carol",
        id="w1",
        kind="watch",
        topic="lookout/carol/watch",
        payload=b"{}",
        reply_topic="lookout/carol/reply/w1",
        correlation_data=None,
        received_at=time.time(),
    )
    await journal.begin(entry)
    async with started(journal, replay=[entry]) as h:
        err = await h.publisher.terminal("w1")
        assert err["type"] == "error"
        assert h.handlers.calls == []


async def test_a_journal_write_failure_gives_unavailable_and_the_worker_lives(h, engine, logs):
    async with engine.begin() as conn:
        await conn.run_sync(requests_table.drop)
    ack = h.send("alice", {"id": "nostore"})
    err = await h.publisher.terminal("nostore")
    await h.settle()
    assert err["error"]["code"] == "unavailable"
    assert ack.count == 1  # acked, or the broker would redeliver it forever
    assert h.handlers.calls == []
    assert any(e["event"] == "journal_write_failed" for e in logs)
    await create_tables(engine)  # the store is back
    h.send("alice", {"id": "stored"})
    assert (await h.publisher.terminal("stored"))["type"] == "done"


# -- the health route, end to end through the dispatcher -------------------------------


async def test_health_route_reports_version_uptime_and_every_probe(journal):
    from service import __version__
    from service.mqtt.health import HealthReporter, HealthRequest

    reporter = HealthReporter(started_at=time.time() - 42)
    publisher = FakePublisher()
    dispatcher = Dispatcher(
        publisher,
        TopicMap(),
        journal,
        [RequestRoute(RequestKind.HEALTH, HealthRequest, reporter.handle)],
        [],
    )
    reporter.register("requests", lambda: {"received": dispatcher.stats.requests})
    reporter.register("broker", lambda: {"connected": True})
    inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def messages() -> AsyncIterator[Message]:
        while True:
            yield await inbox.get()

    task = asyncio.create_task(dispatcher.run(messages()), name="test-health-dispatch")
    try:
        msg, ack = message("lookout/ops/health", {"id": "hz"})
        inbox.put_nowait(msg)
        done = await publisher.terminal("hz")
        assert done["type"] == "done" and done["version"] == __version__
        assert done["uptime_s"] >= 42
        assert done["requests"] == {"received": 1}
        assert done["broker"] == {"connected": True}
        await ack.wait()
        await asyncio.wait_for(spawned_tasks_done(task), WAIT)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)

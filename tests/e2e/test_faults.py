"""Fault injection against the real `lookout run`: broker, worker, LLM, Frigate and store faults.

Every test here can fail if lookout regresses on one of README's guarantees: each request
gets exactly one terminal reply (`done` or `error`), nothing accepted is lost across a
restart, and the worker comes back by itself.

Replies are counted by :class:`ReplyCollector`, a test client that itself survives a broker
restart (fixed client id, ``clean_start=False``, a session expiry and a reconnect loop),
so a reply published while the collector was cut off still reaches the count. QoS 1 is
at-least-once, so a byte-identical copy of a reply (a redelivery by the broker) is counted
apart; two *different* terminal replies for one request id are a lookout bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.e2e.test_chat import provider
from tests.fake_llm import (
    FakeLLM,
    RecordedRequest,
    Reply,
    delta,
    error,
    hang,
    hang_mid_stream,
    invalid_json,
    refuse,
    slow_tokens,
    stream,
    text,
    tool_calls,
    truncated,
)
from tests.frigate_replay import tracked_object

pytestmark = pytest.mark.e2e

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
TERMINAL = ("done", "error")


# -------------------------------------------------------------------------- the collector


class ReplyCollector:
    """Replies and statuses under a prefix, counted per request id, across broker restarts.

    Args:
        host: Broker host.
        port: Broker port.
        filters: Topic filters to subscribe to (QoS 1), again after every reconnect.
        expiry_s: Session expiry: the broker keeps our subscriptions and queues replies
            for this long while we are cut off.
    """

    def __init__(self, host: str, port: int, filters: Iterable[str], *, expiry_s: int = 300):
        self.host, self.port = host, port
        self.filters = list(filters)
        self.expiry_s = expiry_s
        self.client_id = f"faults-{uuid.uuid4().hex[:10]}"
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.terminals: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.statuses: list[bytes] = []
        self.malformed: list[bytes] = []
        self.redelivered = 0
        self.connects = 0
        self._payloads: dict[str, set[bytes]] = defaultdict(set)
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReplyCollector:
        self._task = asyncio.create_task(self._run(), name="reply-collector")
        async with asyncio.timeout(10):
            await self._up.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.expiry_s
        while True:
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                keepalive=5,
                socket_options=NODELAY,
            )
            client.pending_calls_threshold = 100_000
            try:
                async with client:
                    for topic_filter in self.filters:
                        await client.subscribe(topic_filter, qos=1)
                    self._client = client
                    self.connects += 1
                    self._up.set()
                    async for message in client.messages:
                        self._take(message)
            except aiomqtt.MqttError:
                pass
            finally:
                self._client = None
                self._up.clear()
            # Reconnect backoff while the broker is away (not a synchronisation sleep).
            await asyncio.sleep(0.2)

    def _take(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if message.topic.value.endswith("/status"):
            self.statuses.append(payload)
        else:
            try:
                body = json.loads(payload)
                rid = body["id"]
            except (ValueError, TypeError, KeyError):
                self.malformed.append(payload)  # checked by assert_exactly_one_terminal
                return
            if payload in self._payloads[rid]:
                self.redelivered += 1  # QoS 1 is at-least-once: the same bytes again
                return
            self._payloads[rid].add(payload)
            self.replies[rid].append(body)
            if body["type"] in TERMINAL:
                self.terminals[rid].append(body)
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait (event-driven) until ``predicate`` holds after some message arrived."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove(entry)

    async def wait_terminals(self, ids: Iterable[str], timeout: float) -> None:
        wanted = list(ids)
        try:
            await self.wait_until(lambda: all(self.terminals.get(i) for i in wanted), timeout)
        except TimeoutError:
            missing = [i for i in wanted if not self.terminals.get(i)]
            raise AssertionError(f"{len(missing)} requests never ended: {missing[:10]}") from None

    async def publish(self, topic: str, body: Any, *, qos: int = 1, retain: bool = False) -> None:
        """Publish, waiting for the broker if it is away."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        while True:
            await self._up.wait()
            client = self._client
            if client is None:
                continue
            try:
                await client.publish(topic, payload, qos=qos, retain=retain)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the reconnect loop is about to notice
                continue
            return

    async def request(
        self, prefix: str, user: str, kind: str, body: dict[str, Any], timeout: float = 20.0
    ) -> dict[str, Any]:
        """One request on the default reply topic; returns its terminal reply."""
        body = {"id": uuid.uuid4().hex[:12], **body}
        await self.publish(f"{prefix}/{user}/{kind}", body)
        await self.wait_terminals([body["id"]], timeout)
        return self.terminals[body["id"]][0]

    async def drain(self, prefix: str) -> None:
        """A last request through the worker, so replies still in flight arrive first."""
        done = await self.request(prefix, "probe", "health", {})
        assert done["type"] == "done", done

    def assert_exactly_one_terminal(self, ids: Iterable[str]) -> None:
        twice = {i: self.terminals[i] for i in ids if len(self.terminals.get(i, [])) != 1}
        assert not twice, f"requests without exactly one terminal reply: {twice}"
        assert not self.malformed, f"replies that are not JSON with an id: {self.malformed[:3]}"

    def seqs(self, rid: str) -> list[int]:
        return sorted(r["seq"] for r in self.replies[rid])


def reply_filters(prefix: str) -> list[str]:
    return [f"{prefix}/+/reply/#", f"{prefix}/status"]


async def wait_logged(worker: Any, events: set[str], timeout: float) -> None:
    """Wait until the worker has logged each of ``events`` (its log is the only window)."""
    async with asyncio.timeout(timeout):
        while True:
            if events <= {e.get("event") for e in log_events(worker)}:
                return
            await asyncio.sleep(0.1)  # re-read cadence, not synchronisation


def log_events(worker: Any) -> list[dict[str, Any]]:
    """The worker's JSON log lines, parsed (other lines skipped)."""
    events = []
    for line in worker.log_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                events.append(entry)
    return events


# ---------------------------------------------------------------------- broker restart


async def test_broker_restart_mid_stream_every_chat_ends_once(private_broker, worker_factory):
    """50 chats streaming when mosquitto stops for 5 s: each ends once, nothing is lost."""
    chats = 50
    async with FakeLLM() as fake:
        # ~7.5 s of tokens per chat: every stream spans the whole outage.
        fake.set_responder(lambda _r: slow_tokens(50, 0.15))
        worker = worker_factory(
            private_broker,
            config={
                "llm": provider(fake),
                "chat": {"max_concurrent": 64},
                "limits": {"requests_per_minute": 0},
            },
        )
        p = worker.prefix
        async with ReplyCollector(
            private_broker.host, private_broker.port, reply_filters(p)
        ) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            ids = [f"c{n:02d}" for n in range(chats)]
            for n, rid in enumerate(ids):
                await col.publish(f"{p}/user{n % 5}/chat", {"id": rid, "text": "count slowly"})
            await fake.wait_for_requests(chats, timeout=20)
            # Streaming: every chat has sent part of its answer.
            await col.wait_until(
                lambda: all(
                    any(r["type"] == "content" for r in col.replies.get(i, [])) for i in ids
                ),
                20,
            )
            assert not any(col.terminals.get(i) for i in ids), "streams ended before the outage"
            private_broker.stop()
            await asyncio.sleep(5)  # the outage itself: nothing to wait on
            private_broker.start()
            await col.wait_terminals(ids, timeout=40)
            health = await col.request(p, "ops", "health", {})
            await col.wait_until(lambda: col.statuses[-1] == b"online", 10)
            await col.drain(p)

        col.assert_exactly_one_terminal(ids)
        for rid in ids:
            final = col.terminals[rid][0]
            assert final["type"] == "done", final
            # No reply lost: seq runs 0..n without a gap, and the streamed text adds up.
            assert col.seqs(rid) == list(range(final["seq"] + 1)), rid
            streamed = "".join(r["delta"] for r in col.replies[rid] if r["type"] == "content")
            assert streamed == final["message"]["content"] == " tok" * 50
        # Back online by itself: same process, a second connection, the status retained.
        assert worker.starts == 1 and worker.proc.poll() is None
        assert health["broker"]["connected"] is True and health["broker"]["connects"] == 2
        assert col.connects >= 2
        # Replies in flight when the link dropped were retried at once on the new link,
        # not after aiomqtt's 10 s publish timeout.
        assert "Operation timed out" not in worker.log_text()


# ------------------------------------------------------------------------ worker kill -9


def phased(hold: dict[str, str]) -> Callable[[RecordedRequest], Reply]:
    """Hang (some mid-answer) while ``hold["phase"] == "hang"``; answer at once afterwards."""

    def respond(request: RecordedRequest) -> Reply:
        if hold["phase"] != "hang":
            return text("answered after the restart")
        last = json.dumps(request.last_message)
        return hang_mid_stream("partial ") if "midstream" in last else hang()

    return respond


async def start_watch(col: ReplyCollector, p: str, fp: str, camera: str) -> str:
    # A camera Frigate reports (retained state), with no frames: the watch waits for one.
    await col.publish(f"{fp}/{camera}/detect/state", b"ON", retain=True)
    started = await col.request(
        p, "owner", "watch", {"action": "start", "camera": camera, "condition": "a fox"}
    )
    assert started["type"] == "done", started
    return str(started["job_id"])


async def assert_watch_resumed(col: ReplyCollector, p: str, job_id: str) -> None:
    got = await col.request(p, "owner", "watch", {"action": "get", "job_id": job_id})
    assert got["type"] == "done", got
    assert got["job"]["status"] not in ("success", "failed", "cancelled"), got["job"]
    health = await col.request(p, "ops", "health", {})
    assert health["watches"]["resumed"] == 1 and health["watches"]["active"] == 1, health


async def test_kill_9_with_requests_running_and_queued_each_answered_once(broker, worker_factory):
    """Running chats are replayed from the journal; requests sent while down are served."""
    hold = {"phase": "hang"}
    async with FakeLLM(responder=phased(hold)) as fake:
        p = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{p}fr"
        worker = worker_factory(
            broker,
            prefix=p,
            config={"llm": provider(fake, timeout_s=60), "frigate": {"topic_prefix": fp}},
        )
        async with ReplyCollector(broker.host, broker.port, reply_filters(p)) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            job_id = await start_watch(col, p, fp, "yard")

            running = ["k1", "k2", "k3midstream", "k4midstream"]
            for rid in running:
                await col.publish(f"{p}/ann/chat", {"id": rid, "text": f"please {rid}"})
            await fake.wait_for_requests(len(running), timeout=10)
            await col.wait_until(
                lambda: all(col.replies.get(r) for r in running if "midstream" in r), 10
            )
            worker.kill()

            # Published while lookout is dead: the broker keeps them in its session.
            queued = ["h1", "h2", "h3", "d1", "d2"]
            for rid in queued:
                kind = "health" if rid.startswith("h") else "chat"
                body = {"id": rid} if kind == "health" else {"id": rid, "text": "hello"}
                await col.publish(f"{p}/bob/{kind}", body)
            await col.publish(f"{p}/bob/health", {"id": "h1"})  # as a redelivery would
            hold["phase"] = "answer"
            worker.start()
            await col.wait_terminals(running + queued, timeout=30)
            await assert_watch_resumed(col, p, job_id)
            await col.drain(p)

        col.assert_exactly_one_terminal(running + queued)
        for rid in running + queued:
            assert col.terminals[rid][0]["type"] == "done", col.terminals[rid]
        for rid in [*running, "d1", "d2"]:
            assert col.terminals[rid][0]["message"]["content"] == "answered after the restart"
        # The mid-stream ones had published the start of a first answer before the kill;
        # the replayed run streams its answer again from the start (its own seq 0, 1, ...).
        for rid in running[2:]:
            streamed = "".join(r["delta"] for r in col.replies[rid] if r["type"] == "content")
            # (The coalescer sends the first piece at once and the rest ~150 ms later.)
            assert streamed in (
                "partanswered after the restart",
                "partial answered after the restart",
            )
        events = log_events(worker)
        assert [e["count"] for e in events if e.get("event") == "journal_replay"] == [4]
        replayed = {e["request_id"] for e in events if e.get("event") == "request_replayed"}
        assert replayed == set(running)


# ---------------------------------------------------------------------------- LLM faults


def tools_forever(_request: RecordedRequest) -> Reply:
    """A model that asks for a tool on every turn, even when offered none."""
    return tool_calls([("get_profile_status", {})])


# (name, replies queued for the case, the responder after them, chat extras, expected code
# or "done", a check on the terminal reply and the model requests)
Case = tuple[
    str,
    list[Reply],
    Callable[[RecordedRequest], Reply] | None,
    dict[str, Any],
    str | tuple[str, ...],
    Callable[[dict[str, Any], list[dict[str, Any]], list[RecordedRequest]], None] | None,
]


def _retried_after_pause(
    _final: dict[str, Any], _replies: list[dict[str, Any]], reqs: list[RecordedRequest]
) -> None:
    assert len(reqs) == 2
    # Retry-After: 0.3 was honoured (a lower bound: it cannot pass by being fast).
    assert reqs[1].received_at - reqs[0].received_at >= 0.3


def _attempts(n: int) -> Callable[..., None]:
    def check(_f: Any, _r: Any, reqs: list[RecordedRequest]) -> None:
        assert len(reqs) == n, f"{len(reqs)} model requests, expected {n}"

    return check


def _tool_error(fragment: str) -> Callable[..., None]:
    def check(final: dict[str, Any], replies: list[dict[str, Any]], _q: Any) -> None:
        [result] = [r for r in replies if r["type"] == "tool_result"]
        assert result["ok"] is False and fragment in result["result"]["error"], result
        assert final["tool_calls"][0]["response"] == result["result"]
        assert final["message"]["content"] == "I could not do that."

    return check


def _length(final: dict[str, Any], _replies: Any, reqs: list[RecordedRequest]) -> None:
    assert final["finish_reason"] == "length" and final["tool_iterations"] == 2, final
    assert final["message"]["content"], final
    assert len(reqs) == 3 and reqs[-1].tools is None  # the last turn offered no tools


LLM_CASES: list[Case] = [
    ("refused", [], lambda _r: refuse(), {}, "llm_unavailable", _attempts(2)),
    ("hang_before_first_byte", [hang()], None, {}, "llm_timeout", _attempts(1)),
    ("hang_mid_stream", [hang_mid_stream()], None, {}, "llm_timeout", _attempts(1)),
    (
        "429_retry_after_then_ok",
        [error(429, "slow down", headers={"Retry-After": "0.3"}), text("after the pause")],
        None, {}, "done", _retried_after_pause,
    ),
    ("500", [], lambda _r: error(500, "boom"), {}, "llm_unavailable", _attempts(2)),
    ("401", [error(401, "bad key")], None, {}, "llm_auth", _attempts(1)),
    ("truncated_sse", [truncated()], None, {}, "llm_error", _attempts(1)),
    ("invalid_json_chunk", [invalid_json("half ")], None, {}, "llm_error", _attempts(1)),
    (
        "unknown_tool",
        [tool_calls([("erase_recordings", {"camera": "yard"})]), text("I could not do that.")],
        None, {}, "done", _tool_error("unknown tool 'erase_recordings'"),
    ),
    (
        "invalid_arguments",
        [tool_calls([("search_objects", {"limit": "many"})]), text("I could not do that.")],
        None, {}, "done", _tool_error("invalid arguments"),
    ),
    ("tools_forever", [], tools_forever, {"max_tool_iterations": 2}, "done", _length),
    ("turn_deadline", [slow_tokens(40, 0.2)], None, {}, "llm_timeout", _attempts(1)),
    # Valid JSON of the wrong shape: the stream reader raises an unclassified TypeError, and
    # the chat used to wait for its request deadline. It ends at once, as `internal` (as
    # `llm_error` once service/accumulate.py raises ValueError there, a malformed stream).
    ("tool_calls_not_a_list", [stream(delta({"tool_calls": "x"}))], None, {},
     ("internal", "llm_error"), _attempts(1)),
]  # fmt: skip

TURN_DEADLINE_S = 3.0
CHUNK_TIMEOUT_S = 1.0


async def test_llm_faults_end_in_the_documented_reply_and_the_next_chat_works(
    broker, worker_factory
):
    async with FakeLLM() as fake:
        worker = worker_factory(
            broker,
            config={
                "llm": provider(fake, max_retries=1, timeout_s=CHUNK_TIMEOUT_S),
                "chat": {"turn_deadline_s": TURN_DEADLINE_S, "request_deadline_s": 20},
                "limits": {"requests_per_minute": 0},
            },
        )
        p = worker.prefix
        async with ReplyCollector(broker.host, broker.port, reply_filters(p)) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            failures = []
            for name, replies, responder, extra, expected, check in LLM_CASES:
                fake.reset()
                fake.push(*replies)
                fake.set_responder(responder)
                rid = f"case-{name}"
                await col.publish(f"{p}/u/chat", {"id": rid, "text": name, **extra})
                # Every case is bounded by the turn deadline (plus retries and backoff).
                try:
                    await col.wait_terminals([rid], timeout=TURN_DEADLINE_S * 2 + 5)
                except AssertionError as exc:
                    failures.append(f"{name}: {exc}")
                    continue
                final = col.terminals[rid][0]
                got = final["type"] if final["type"] == "done" else final["error"]["code"]
                if got not in ((expected,) if isinstance(expected, str) else expected):
                    failures.append(f"{name}: expected {expected}, got {final}")
                    continue
                if check is not None:
                    try:
                        check(final, col.replies[rid], list(fake.requests))
                    except AssertionError as exc:
                        failures.append(f"{name}: {exc}")
                # The next request works.
                fake.reset()
                fake.set_responder(lambda _r: text("fine again"))
                after = await col.request(p, "u", "chat", {"text": "still there?"}, timeout=10)
                if after.get("message", {}).get("content") != "fine again":
                    failures.append(f"{name}: the next chat failed: {after}")
            await col.drain(p)
        assert not failures, "\n".join(failures)
        col.assert_exactly_one_terminal(f"case-{c[0]}" for c in LLM_CASES)
        assert "sk-test-secret-key" not in worker.log_text()


# ------------------------------------------------------------------------- Frigate faults


def event(kind: str, oid: str, camera: str, label: str, start: float) -> dict[str, Any]:
    after = tracked_object(oid, camera, label, start, start + 1.0, end=None)
    if kind == "end":
        after = tracked_object(oid, camera, label, start, start + 2.0, end=start + 2.0)
    return {"type": kind, "before": after, "after": after}


async def test_frigate_faults_are_stated_not_guessed(broker, worker_factory):
    async with FakeLLM() as fake:
        p = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{p}fr"
        worker = worker_factory(
            broker,
            prefix=p,
            config={
                "llm": provider(fake),
                "frigate": {"topic_prefix": fp, "cameras": {"porch": {"friendly_name": "Porch"}}},
            },
        )
        async with ReplyCollector(broker.host, broker.port, reply_filters(p)) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            await col.publish(f"{fp}/porch/detect/state", b"ON", retain=True)
            await col.publish(f"{fp}/available", b"offline", retain=True)

            def tool(name: str, **arguments: Any) -> dict[str, Any]:
                return {"tool_name": name, "arguments": arguments}

            live = await col.request(p, "ann", "tool", tool("get_live_context", camera="porch"))
            assert live["type"] == "done", live
            assert "offline" in live["result"]["frigate"]
            # A camera that never sent a frame: said so, and no image goes to the model.
            assert live["result"]["frame"] == "no frame has been received from this camera"
            status = await col.request(p, "ann", "tool", tool("get_profile_status"))
            assert status["result"]["frigate"] == "offline"

            # Through a chat, the model gets the same facts in the tool result.
            fake.push(tool_calls([("get_live_context", {"camera": "porch"})]), text("Offline."))
            rid = "chat-offline"
            await col.publish(f"{p}/ann/chat", {"id": rid, "text": "anyone on the porch?"})
            await col.wait_terminals([rid], 15)
            [result] = [r for r in col.replies[rid] if r["type"] == "tool_result"]
            assert "offline" in result["result"]["frigate"]
            assert "no frame" in result["result"]["frame"]
            reqs = await fake.wait_for_requests(2)
            assert "Frigate is offline" in reqs[1].messages[-1]["content"]

            # Events for a camera nobody configured (and junk on the same topic).
            start = time.time() - 60
            await col.publish(f"{fp}/events", b"{not json")
            await col.publish(f"{fp}/events", {"type": "new", "after": {"camera": "x"}})
            for kind in ("new", "update", "end"):
                await col.publish(f"{fp}/events", event(kind, "1.0-garage", "garage", "car", start))
            found = await wait_search(col, p, "garage", 1)
            assert found["result"]["objects"][0]["label"] == "car"
            health = await col.request(p, "ops", "health", {})
            assert "garage" in health["frigate"]["cameras"]
            assert health["requests"]["handler_errors"] == 0

            await col.publish(f"{fp}/available", b"online", retain=True)
            live = await col.request(p, "ann", "tool", tool("get_live_context", camera="garage"))
            assert live["type"] == "done" and "frigate" not in live["result"], live
            await col.drain(p)
        assert worker.proc.poll() is None


async def wait_search(col: ReplyCollector, p: str, camera: str, n: int) -> dict[str, Any]:
    """Ask until ``n`` events of ``camera`` are stored (the writer batches asynchronously)."""
    async with asyncio.timeout(15):
        while True:
            found = await col.request(
                p, "ops", "tool", {"tool_name": "search_objects", "arguments": {"camera": camera}}
            )
            assert found["type"] == "done", found
            if found["result"]["count"] >= n:
                return found
            await asyncio.sleep(0.1)  # re-ask cadence, not synchronisation


# --------------------------------------------------------------------------- store faults


@pytest.mark.sqlite_store  # reads the worker's SQLite file itself
async def test_database_locked_while_ingesting_events_loses_nothing(
    broker, worker_factory, tmp_path
):
    """Another process holds SQLite's write lock past lookout's 10 s busy timeout.

    Events that arrive meanwhile are retried until stored; a request that cannot be
    journaled is refused with `unavailable`; a chat that finishes meanwhile still gets its
    outcome journaled once the lock is gone, so a restart does not run it again.
    """
    async with FakeLLM(responder=lambda _r: slow_tokens(5, 0.3)) as fake:
        p = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{p}fr"
        worker = worker_factory(
            broker, prefix=p, config={"llm": provider(fake), "frigate": {"topic_prefix": fp}}
        )
        start = time.time() - 600
        async with ReplyCollector(broker.host, broker.port, reply_filters(p)) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            before = [f"{start + n:.1f}-before{n}" for n in range(5)]
            for n, oid in enumerate(before):
                await col.publish(f"{fp}/events", event("end", oid, "yard", "person", start + n))
            await wait_search(col, p, "yard", len(before))
            # A chat (client-held history: no conversation to save) running into the lock.
            chat = {"id": "locked-chat", "messages": [{"role": "user", "content": "count"}]}
            await col.publish(f"{p}/ann/chat", chat)
            await fake.wait_for_requests(1)  # journaled by now

            lock = sqlite3.connect(tmp_path / "lookout.db", timeout=30, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")
                during = [f"{start + 100 + n:.1f}-during{n}" for n in range(20)]
                for n, oid in enumerate(during):
                    await col.publish(
                        f"{fp}/events", event("end", oid, "yard", "dog", start + 100 + n)
                    )
                # The chat answers; recording its outcome now waits for the store.
                await col.wait_terminals(["locked-chat"], 10)
                # A request while the store is locked: its journal write gives up after the
                # busy timeout and the caller is told, once.
                refused = await col.request(p, "ops", "health", {}, timeout=40)
                # Held until the event batch and the chat's outcome have each failed once.
                await wait_logged(worker, {"event_write_failed", "journal_finish_failed"}, 40)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            assert refused["type"] == "error", refused
            assert refused["error"]["code"] == "unavailable", refused

            found = await wait_search(col, p, "yard", len(before) + len(during))
            health = await col.request(p, "ops", "health", {})
            await col.drain(p)
            assert worker.proc.poll() is None
            # Restart: nothing that was answered runs again.
            worker.signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 10) == 0
            worker.start()
            await col.wait_until(lambda: col.statuses[-1] == b"online", 20)
            await col.drain(p)
        assert col.terminals["locked-chat"][0]["type"] == "done"
        col.assert_exactly_one_terminal(["locked-chat", refused["id"]])
        assert len(fake.requests) == 1
    stored = {o["id"] for o in found["result"]["objects"]}
    assert stored == set(before + during)
    store = health["store"]
    assert store["write_errors"] >= 1 and store["pending"] == 0, store
    assert store["rows_written"] >= len(before) + len(during), store
    events = log_events(worker)
    logged = {e.get("event") for e in events}
    assert {"event_write_failed", "journal_write_failed", "journal_finish_failed"} <= logged
    assert "journal_finish_recovered" in logged and "request_replayed" not in logged


# -------------------------------------------------------------------------- graceful stop


async def test_sigterm_with_chats_in_flight_answers_each_and_keeps_watches(broker, worker_factory):
    async with FakeLLM(responder=lambda _r: hang()) as fake:
        p = f"lk{uuid.uuid4().hex[:8]}"
        fp = f"{p}fr"
        worker = worker_factory(
            broker,
            prefix=p,
            config={"llm": provider(fake, timeout_s=60), "frigate": {"topic_prefix": fp}},
        )
        async with ReplyCollector(broker.host, broker.port, reply_filters(p)) as col:
            worker.start()
            await col.wait_until(lambda: b"online" in col.statuses, 20)
            job_id = await start_watch(col, p, fp, "gate")
            chats = [f"s{n}" for n in range(6)]
            for rid in chats:
                await col.publish(f"{p}/cy/chat", {"id": rid, "text": "wait for it"})
            await fake.wait_for_requests(len(chats), timeout=10)

            stopped_at = time.monotonic()
            worker.signal(signal.SIGTERM)
            await col.wait_terminals(chats, timeout=5)
            assert await asyncio.to_thread(worker.wait, 5) == 0
            assert time.monotonic() - stopped_at < 5
            await col.wait_until(lambda: col.statuses[-1] == b"offline", 5)
            for rid in chats:
                final = col.terminals[rid][0]
                assert final["type"] == "error", final
                assert final["error"]["code"] == "shutting_down", final

            fake.set_responder(lambda _r: text("back"))
            worker.start()
            await col.wait_until(lambda: col.statuses[-1] == b"online", 20)
            await assert_watch_resumed(col, p, job_id)
            await col.drain(p)
        # Answered before the stop: not run again after it.
        col.assert_exactly_one_terminal(chats)
        assert len(fake.requests) == len(chats)
        assert "Traceback" not in worker.log_text()

"""The Home Assistant bridge: lookout's device in Home Assistant, kept up to date.

It runs inside the worker and talks to lookout only through lookout's own MQTT API:
a question from the `text` or `notify` entity becomes a ``chat`` request published to
``<prefix>/<user>/chat`` with ``reply_to`` pointing at the bridge's reply topic; the
button lists the user's watches with a ``watch`` request and cancels each; the LLM
sensor asks ``health``. Watch alerts, snapshots and job states are read from the watch
topics of every user and republished in the shapes Home Assistant's entities want.

Frigate's availability is republished as ``ON``/``OFF`` on a topic of the bridge's own, so
that Home Assistant's Frigate sensor reads ``off`` rather than ``unknown`` while no Frigate
has said anything. It comes from every ``health`` reply (its ``frigate.available`` is what
lookout's Frigate mirror saw; the first reply comes at start, after lookout's
subscriptions, so a retained ``online`` of Frigate is already counted), and from Frigate's
``available`` messages themselves when the composition root hands them to :meth:`handle`
too (the Frigate mirror subscribes to that topic, so the bridge does not list it).

Interface for the composition root: :meth:`HomeAssistantBridge.subscriptions` (filters
to route to it), :meth:`HomeAssistantBridge.handle` (sync and quick, called by the
dispatcher for each of those messages) and :meth:`HomeAssistantBridge.run` (the task).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from service import __version__
from service.homeassistant.discovery import (
    ALERT_EVENT_TYPES,
    HaTopics,
    clip_state,
    device_config,
    encode,
)
from service.homeassistant.payloads import WatchAlert, WatchJobState, parse_jobs, parse_reply
from service.mqtt import Message, TopicMap
from service.settings import HomeAssistantSettings

log = structlog.get_logger(__name__)

WORK_QUEUE = 1000
REQUEST_TIMEOUT_S = 15.0
MAX_LISTED_WATCHES = 50
MAX_TOOL_RESPONSE_CHARS = 2000
LLM_ERROR_CODES = frozenset({"llm_unavailable", "llm_auth", "llm_timeout"})


class BridgePublisher(Protocol):
    """What the bridge needs from the bus (:class:`~service.mqtt.bus.MqttBus` fits)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish one message, waiting for the broker while it is away."""


class HomeAssistantBridge:
    """lookout's Home Assistant device: discovery, questions, alerts, watches, links."""

    def __init__(
        self, settings: HomeAssistantSettings, topics: TopicMap, *, version: str = __version__
    ) -> None:
        """Prepare the bridge; nothing is published until :meth:`run`.

        Args:
            settings: The ``homeassistant`` section of the configuration.
            topics: lookout's topic map (its prefix and Frigate's).
            version: Shown in Home Assistant's device page.
        """
        self.settings = settings
        self.topics = topics
        self.ha = HaTopics.build(settings, topics)
        self._version = version
        self._publisher: BridgePublisher | None = None
        self._work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(WORK_QUEUE)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._watches: dict[tuple[str, str], dict[str, Any]] = {}
        self._watches_queued = False
        self._probe_now = asyncio.Event()
        self._conversation: tuple[str, float] | None = None
        self._llm_error: dict[str, Any] | None = None
        self._llm_health: dict[str, Any] | None = None
        self._frigate: bool | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- wiring ----------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        """``(filter, qos)`` pairs whose messages the dispatcher must hand to :meth:`handle`.

        Snapshots are QoS 0: a stale picture is not worth queueing for a stopped lookout.
        """
        if not self.settings.discovery:
            return []
        t = self.topics
        return [
            (self.ha.ha_status, 1),
            (self.ha.ask, 1),
            (self.ha.cancel_watches, 1),
            (self.ha.replies, 1),
            (t.watch_alert.filter, 1),
            (t.watch_snapshot.filter, 0),
            (t.watch_state.filter, 1),
        ]

    def handle(self, message: Message) -> None:
        """Take one routed message; quick and synchronous (the dispatcher's loop calls it).

        Besides the filters of :meth:`subscriptions` it takes Frigate's ``available``
        messages, which the Frigate mirror subscribes to.
        """
        topic = message.topic
        if topic == self.ha.replies:
            self._on_reply(message.payload)
        elif topic == self.ha.ha_status:
            if message.payload.strip().lower() == b"online":
                self._enqueue("announce", None)
        elif topic == self.ha.ask:
            self._enqueue("ask", message.payload)
        elif topic == self.ha.cancel_watches:
            self._enqueue("cancel_watches", None)
        elif topic == self.topics.frigate_available:
            self._set_frigate(message.payload.decode("utf-8", "replace"))
        elif (captures := self.topics.watch_state.match(topic)) is not None:
            self._on_watch_state(captures["user"], captures["job_id"], message.payload)
        elif message.retain:
            # Alerts and snapshots replayed on (re)subscribe are old news: no event, no image.
            return
        elif (captures := self.topics.watch_alert.match(topic)) is not None:
            self._enqueue("alert", (captures["user"], captures["job_id"], message.payload))
        elif self.topics.watch_snapshot.match(topic) is not None:
            self._enqueue("snapshot", message.payload)

    async def run(self, publisher: BridgePublisher) -> None:
        """Announce the device and serve it until cancelled.

        With discovery switched off, remove the device (an empty retained config) and return.
        """
        self._publisher = publisher
        if not self.settings.discovery:
            await publisher.publish(self.ha.config, b"", qos=1, retain=True)
            log.info("ha_discovery_removed", topic=self.ha.config)
            return
        await self._announce()
        self._spawn(self._health_checks(), "ha-health-check")
        try:
            while True:
                kind, data = await self._work.get()
                try:
                    await self._process(kind, data)
                except Exception:
                    log.exception("ha_bridge_failed", work=kind)
        finally:
            for task in list(self._tasks):
                task.cancel()

    # -- inbound (sync) --------------------------------------------------------------

    def _enqueue(self, kind: str, data: Any) -> None:
        try:
            self._work.put_nowait((kind, data))
        except asyncio.QueueFull:
            log.warning("ha_bridge_queue_full", work=kind)

    def _on_reply(self, payload: bytes) -> None:
        reply = parse_reply(payload)
        if reply is None or not reply.terminal:
            return
        future = self._pending.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply.body())

    def _on_watch_state(self, user: str, job_id: str, payload: bytes) -> None:
        key = (user, job_id)
        job: WatchJobState | None = None
        if payload:  # an empty payload clears the retained state of a purged watch
            try:
                job = WatchJobState.model_validate_json(payload)
            except ValidationError:
                log.warning("ha_watch_state_unreadable", user=user, job_id=job_id)
        if job is not None and job.active:
            self._watches[key] = job.model_copy(update={"user": user, "job_id": job_id}).summary()
        elif self._watches.pop(key, None) is None:
            return
        if not self._watches_queued:
            self._watches_queued = True
            self._enqueue("watches", None)

    # -- work (async) ----------------------------------------------------------------

    async def _process(self, kind: str, data: Any) -> None:
        if kind == "ask":
            text = bytes(data).decode("utf-8", "replace").strip()
            if text:
                self._spawn(self._ask(text), f"ha-ask-{uuid.uuid4().hex[:8]}")
        elif kind == "alert":
            await self._alert(*data)
        elif kind == "snapshot":
            await self._publish(self.ha.snapshot, data, retain=True)
        elif kind == "watches":
            self._watches_queued = False
            await self._publish_watches()
        elif kind == "cancel_watches":
            self._spawn(self._cancel_watches(), "ha-cancel-watches")
        elif kind == "announce":
            await self._announce()
            self._probe_now.set()
        elif kind == "frigate":
            await self._publish_frigate()

    async def _announce(self) -> None:
        config = device_config(self.settings, self.topics, self.ha, self._version)
        await self._publish(self.ha.config, encode(config), retain=True)
        await self._publish_watches()
        await self._publish_frigate()
        log.info("ha_discovery_published", topic=self.ha.config, entities=len(config["cmps"]))

    async def _ask(self, question: str) -> None:
        await self._publish(self.ha.question, clip_state(question).encode(), retain=True)
        body: dict[str, Any] = {"text": question, "stream": False}
        now = time.monotonic()
        if (
            self._conversation
            and now - self._conversation[1] < self.settings.continue_conversation_s
        ):
            body["conversation_id"] = self._conversation[0]
        reply = await self._request(
            self.ha.chat_request, body, self.settings.answer_timeout_s, "ha"
        )
        if reply["type"] == "done":
            content = str((reply.get("message") or {}).get("content") or "")
            state = clip_state(content) or "(no answer)"
            if reply.get("conversation_id"):
                self._conversation = (str(reply["conversation_id"]), time.monotonic())
            self._llm_error = None
        else:
            error = reply.get("error") or {}
            state = clip_state(f"Error: {error.get('message', 'unknown error')}")
            if error.get("code") in LLM_ERROR_CODES:
                self._llm_error = {"code": error.get("code"), "message": error.get("message")}
        attributes = {
            "question": question,
            "answer": (reply.get("message") or {}).get("content"),
            "conversation_id": reply.get("conversation_id"),
            "finish_reason": reply.get("finish_reason"),
            "tool_iterations": reply.get("tool_iterations"),
            "tool_calls": [_compact_call(c) for c in reply.get("tool_calls") or []],
            "error": reply.get("error"),
            "request_id": reply.get("id"),
            "answered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        # The state last: an automation triggered by it reads fresh attributes and LLM state.
        await self._publish_llm()
        await self._publish(self.ha.answer_attributes, encode(attributes), retain=True)
        await self._publish(self.ha.answer, state.encode(), retain=True)
        log.info("ha_question_answered", outcome=reply["type"], chars=len(state))

    async def _alert(self, user: str, job_id: str, payload: bytes) -> None:
        try:
            alert = WatchAlert.model_validate_json(payload)
        except ValidationError:
            log.warning("ha_alert_unreadable", user=user, job_id=job_id)
            return
        reason = alert.end_reason
        kind = reason if reason in ALERT_EVENT_TYPES else "alert"
        fields = {
            k: v for k, v in alert.model_dump(exclude_unset=True).items() if k != "event_type"
        }
        event = {"event_type": kind, "user": user} | fields | {"job_id": alert.job_id or job_id}
        await self._publish(self.ha.alert_event, encode(event))
        log.info("ha_alert_fired", job_id=job_id, camera=alert.camera, event_type=kind)

    async def _publish_watches(self) -> None:
        watches = sorted(self._watches.values(), key=lambda w: (w["user"], w["job_id"]))
        attributes = {"watches": watches[:MAX_LISTED_WATCHES], "count": len(watches)}
        await self._publish(self.ha.watches_attributes, encode(attributes), retain=True)
        await self._publish(self.ha.watches, str(len(watches)).encode(), retain=True)

    async def _cancel_watches(self) -> None:
        reply = await self._request(self.ha.watch_request, {"action": "list"}, REQUEST_TIMEOUT_S)
        if reply["type"] != "done":
            log.warning("ha_watch_list_failed", error=reply.get("error"))
            return
        job_ids = [job.job_id for job in parse_jobs(reply) if job.active]
        outcomes = await asyncio.gather(
            *(
                self._request(
                    self.ha.watch_request, {"action": "cancel", "job_id": j}, REQUEST_TIMEOUT_S
                )
                for j in job_ids
            )
        )
        failed = [
            (j, (r.get("error") or {}).get("code"))
            for j, r in zip(job_ids, outcomes, strict=True)
            if r["type"] != "done"
        ]
        log.info("ha_watches_cancelled", cancelled=len(job_ids) - len(failed), failed=failed)

    async def _health_checks(self) -> None:
        """Ask lookout's health now, every interval, and whenever Home Assistant returns.

        The reply feeds the LLM sensor and the Frigate sensor (what lookout's Frigate
        mirror saw of Frigate's ``available`` topic).
        """
        interval = self.settings.llm_check_interval_s
        while True:
            self._probe_now.clear()
            reply = await self._request(self.ha.health_request, {}, REQUEST_TIMEOUT_S)
            if reply["type"] == "done":
                llm = reply.get("llm")
                self._llm_health = llm if isinstance(llm, dict) else {}
                await self._publish_llm()
                frigate = reply.get("frigate")
                available = frigate.get("available") if isinstance(frigate, dict) else None
                self._set_frigate(available if isinstance(available, str) else "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), interval or None)

    def _set_frigate(self, available: str) -> None:
        """Take Frigate's ``available`` value; queue a publish when the sensor changes.

        ``online`` is ``ON``; ``offline``, ``stopped`` and nothing at all (empty) are ``OFF``.
        """
        online = available.strip().lower() == "online"
        if online != self._frigate:
            self._frigate = online
            self._enqueue("frigate", None)

    async def _publish_frigate(self) -> None:
        if self._frigate is None:
            return  # not known yet: the first health reply decides
        await self._publish(self.ha.frigate, b"ON" if self._frigate else b"OFF", retain=True)

    async def _publish_llm(self) -> None:
        health = self._llm_health
        if health is None:
            return  # unknown until lookout's health has answered once
        configured = bool(health.get("chat"))
        ok = health.get("ok") if isinstance(health.get("ok"), bool) else self._llm_error is None
        attributes = {**health, "last_error": self._llm_error}
        await self._publish(self.ha.llm_attributes, encode(attributes), retain=True)
        await self._publish(self.ha.llm, b"ON" if configured and ok else b"OFF", retain=True)

    # -- plumbing --------------------------------------------------------------------

    async def _request(
        self, topic: str, body: dict[str, Any], timeout: float, tag: str = "hab"
    ) -> dict[str, Any]:
        """Publish one request to lookout and wait for its terminal reply (never raises)."""
        request_id = f"{tag}{uuid.uuid4().hex[:14]}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            payload = {"id": request_id, **body, "reply_to": self.ha.replies}
            await self._publish(topic, encode(payload))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            error = {"code": "timeout", "message": f"no reply within {timeout:g} s"}
            return {"id": request_id, "type": "error", "error": error}
        finally:
            self._pending.pop(request_id, None)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self._publisher is None:
            raise RuntimeError("the bridge is not running")
        await self._publisher.publish(topic, payload, qos=1, retain=retain)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(_guarded(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _guarded(coro: Coroutine[Any, Any, None], name: str) -> None:
    try:
        await coro
    except Exception:
        log.exception("ha_bridge_task_failed", task=name)


def _compact_call(call: Any) -> Any:
    """A tool call for the answer's attributes, its response cut to a readable size."""
    if not isinstance(call, dict):
        return call
    out = {k: call[k] for k in ("name", "arguments") if k in call}
    if "response" in call:
        text = json.dumps(call["response"], ensure_ascii=False, default=str)
        out["response"] = (
            call["response"]
            if len(text) <= MAX_TOOL_RESPONSE_CHARS
            else text[:MAX_TOOL_RESPONSE_CHARS] + "…"
        )
    return out

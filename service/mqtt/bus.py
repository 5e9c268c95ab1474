"""The MQTT bus: the only module that imports aiomqtt.

:class:`MqttBus` keeps one connection alive for months: it reconnects forever with
jittered, capped exponential backoff, resubscribes and republishes its retained
``online`` status after every connect, and stops with :class:`BusAuthError` on bad
credentials instead of hammering the broker. Its session is persistent (fixed client
id, ``clean_start=False``, a session expiry), so requests published while lookout is
down are delivered when it returns.

QoS 1 messages are acknowledged manually (:meth:`Message.ack`): the router acks a
request only once it is written to the journal, so a crash between delivery and the
journal leaves the message with the broker, which delivers it again.

aiomqtt 3 changes this API; keeping it behind this module keeps that migration here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from service.mqtt.link import (
    BusAuthError,
    BusState,
    BusUnavailableError,
    Message,
    raise_if_cancel_was_swallowed,
    reason_code,
)
from service.mqtt.topics import TopicMap
from service.settings import MqttSettings

__all__ = ["BusAuthError", "BusState", "BusUnavailableError", "Message", "MqttBus"]

log = structlog.get_logger(__name__)

# CONNACK codes that mean "these credentials will never work": 4/5 in MQTT 3.1.1,
# 0x86 (bad user name or password), 0x87 (not authorized), 0x8C (bad auth method) in 5.
_AUTH_FAILURES = frozenset({4, 5, 134, 135, 140})


class MqttBus:
    """One persistent MQTT connection with reconnects, availability and a bounded inbox."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: TopicMap,
        subscriptions: list[tuple[str, int]],
        on_overflow: Callable[[Message], None] | None = None,
        *,
        announce: bool = True,
        persistent: bool = True,
        client_id: str | None = None,
        status_topic: str | None = None,
        also_online: tuple[str, ...] = (),
        will_delay_s: int | None = None,
    ) -> None:
        """Prepare the bus; nothing connects until :meth:`run`.

        Args:
            settings: Broker address, credentials and session settings.
            topics: The topic map (for the status topic).
            subscriptions: ``(filter, qos)`` pairs, re-subscribed after every connect.
            on_overflow: Called with a message that found the inbox full.
            announce: Publish the retained ``online``/``offline`` status and the will
                (the worker does; command-line clients do not).
            persistent: Keep a broker session across disconnects (the worker does).
            client_id: Instead of ``mqtt.client_id`` (a cluster's workers each have one).
            status_topic: Where ``online``/``offline`` and the will go (default: the
                service's ``<prefix>/status``; a cluster worker's own topic).
            also_online: More retained topics that get ``online`` at every connect (and
                no will: a cluster worker announces the service this way).
            will_delay_s: Publish the will only this long after the link died (MQTT 5
                Will Delay Interval); a connection to the session before then cancels it.
        """
        self.client_id = client_id or settings.client_id
        self.status_topic = status_topic or topics.status
        self._also_online = also_online
        self._will_delay_s = will_delay_s
        self.offline_on_stop = True
        """Publish ``offline`` at a graceful stop (a cluster worker that is not the last
        one leaves the service's status alone)."""
        self._announce = announce
        self._persistent = persistent
        self._settings = settings
        self._topics = topics
        self._subscriptions = subscriptions
        self._on_overflow = on_overflow
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=settings.inbound_queue)
        self._connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._link_lost: asyncio.Future[None] | None = None
        """Resolved when the current connection ends (see :meth:`publish`)."""
        self._generation = 0
        self._new_connection = asyncio.Event()
        self._clears: set[asyncio.Task[None]] = set()
        """Pending clears of retained replies on MQTT 3.1.1 (see ``publish``)."""
        self._retained: dict[str, bytes] = {}
        self.state = BusState()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled; publish ``offline`` on the way out.

        Raises:
            BusAuthError: The broker rejected the credentials.
        """
        attempt = 0
        while True:
            client = self._make_client()
            try:
                async with client:
                    attempt = 0
                    await self._serve(client)
            except aiomqtt.MqttCodeError as exc:
                if isinstance(exc, MqttConnectError) and reason_code(exc) in _AUTH_FAILURES:
                    # No traceback: the broker's reason code says all there is to say.
                    log.error("mqtt_auth_failed", host=self._settings.host, reason=str(exc))  # noqa: TRY400
                    raise BusAuthError(f"broker refused the credentials: {exc}") from None
                self._lost(str(exc))
            except aiomqtt.MqttError as exc:
                self._lost(str(exc))
            finally:
                self._connected.clear()
                self._client = None
                self.state.connected = False
                if self._link_lost is not None and not self._link_lost.done():
                    self._link_lost.set_result(None)
            # Capped so a broker that is back is found within reconnect_max_s.
            delay = min(
                self._settings.reconnect_max_s, self._settings.reconnect_min_s * 1.6**attempt
            )
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _serve(self, client: aiomqtt.Client) -> None:
        # Counted before subscribing: a resumed session delivers queued requests at once,
        # and their handlers may already report this connection.
        self.state.connects += 1
        self.state.last_connected_at = time.time()
        for topic_filter, qos in self._subscriptions:
            await client.subscribe(topic_filter, qos=qos)
        if self._announce:
            for topic in (self.status_topic, *self._also_online):
                await client.publish(topic, b"online", qos=1, retain=True)
        for topic, payload in list(self._retained.items()):
            await client.publish(topic, payload, qos=1, retain=True)
        self._generation += 1
        generation = self._generation
        self._link_lost = asyncio.get_running_loop().create_future()
        self._client = client
        self.state.connected = True
        self._connected.set()
        # Wake whoever waits for the next connection, and re-arm for the one after.
        self._new_connection.set()
        self._new_connection = asyncio.Event()
        log.info(
            "mqtt_connected",
            host=self._settings.host,
            port=self._settings.port,
            connects=self.state.connects,
            subscriptions=len(self._subscriptions),
        )
        try:
            raise_if_cancel_was_swallowed()
            async for raw in client.messages:
                self._accept(self._convert(raw, client, generation))
        except asyncio.CancelledError:
            # Graceful stop: say goodbye ourselves; a clean DISCONNECT suppresses the will.
            self._connected.clear()
            if not (self._announce and self.offline_on_stop):
                raise
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    client.publish(self.status_topic, b"offline", qos=1, retain=True), 2.0
                )
            log.info("mqtt_offline_published")
            raise

    def _lost(self, reason: str) -> None:
        was_connected = self.state.connected
        self.state.last_error = reason
        if was_connected:
            log.warning("mqtt_disconnected", reason=reason)
        else:
            log.warning("mqtt_connect_failed", host=self._settings.host, reason=reason)

    # -- inbound ---------------------------------------------------------------------

    def _convert(self, raw: aiomqtt.Message, client: aiomqtt.Client, generation: int) -> Message:
        props = raw.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        ack: Callable[[], None] | None = None
        if raw.qos > 0:
            mid, qos, done = raw.mid, raw.qos, [False]

            def ack() -> None:
                # After a reconnect the mid belongs to another message; the broker will
                # redeliver this one in the resumed session instead.
                if not done[0] and generation == self._generation and self._client is client:
                    done[0] = True
                    client._client.ack(mid, qos)  # aiomqtt 2 has no public manual ack

        return Message(
            topic=raw.topic.value,
            payload=raw.payload if isinstance(raw.payload, bytes) else str(raw.payload).encode(),
            qos=raw.qos,
            retain=bool(raw.retain),
            response_topic=response_topic or None,
            correlation_data=bytes(correlation) if correlation else None,
            _ack=ack,
        )

    def _accept(self, message: Message) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.state.dropped += 1
            if self._on_overflow is not None:
                self._on_overflow(message)
            else:
                message.ack()

    async def messages(self) -> AsyncIterator[Message]:
        """Yield inbound messages in arrival order, across reconnects."""
        while True:
            yield await self._inbox.get()

    def inbox_depth(self) -> int:
        """Messages waiting for dispatch."""
        return self._inbox.qsize()

    # -- outbound --------------------------------------------------------------------

    async def next_connection(self, seen: int) -> int:
        """Wait for a connection newer than the ``seen``-th one; return its number.

        Pass 0 for the first. Connections are counted from 1; one that came and went
        while nobody waited is not missed: the caller gets the newest.
        """
        while self._generation <= seen:
            await self._new_connection.wait()
        return self._generation

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the bus is connected.

        Raises:
            BusUnavailableError: Not connected within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise BusUnavailableError("not connected to the broker") from None

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        expiry_s: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish, waiting for the broker while it is away and retrying after a reconnect.

        Args:
            topic: Where to publish.
            payload: The bytes to send.
            qos: 0 or 1.
            retain: Whether the broker keeps it for later subscribers.
            correlation_data: MQTT 5 Correlation Data to echo (dropped on 3.1.1).
            expiry_s: The broker drops the message after this long (MQTT 5 Message Expiry
                Interval). On 3.1.1, which has none, a retained message is cleared by an
                empty retained publish after this long instead.
            timeout: Give up after this many seconds without a broker (``None``: wait).

        Raises:
            BusUnavailableError: ``timeout`` passed while the broker was away.
        """
        properties = self._publish_properties(correlation_data, expiry_s)
        if retain and expiry_s is not None and self._settings.protocol != 5:
            self._clear_later(topic, expiry_s)
        async with asyncio.timeout(timeout):
            while True:
                await self._connected.wait()
                client, lost = self._client, self._link_lost
                if client is None or lost is None:
                    continue
                try:
                    await _unless_lost(
                        client.publish(
                            topic, payload, qos=qos, retain=retain, properties=properties
                        ),
                        lost,
                    )
                except aiomqtt.MqttError as exc:
                    # The link dropped under us; the run loop reconnects, we try again then.
                    log.debug("mqtt_publish_retry", topic=topic, reason=str(exc))
                    if self._client is client:
                        self._connected.clear()
                    continue
                return

    async def unsubscribe(self, filters: list[str]) -> None:
        """Stop receiving ``filters`` (and forget them for later reconnects).

        A cluster worker that stops while others live leaves the shared subscription
        first, so the broker gives new requests only to the workers that stay.
        """
        self._subscriptions = [(f, q) for f, q in self._subscriptions if f not in filters]
        client = self._client
        if client is not None and filters:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(filters, timeout=5)

    async def retain(self, topic: str, payload: bytes) -> None:
        """Publish a retained message now and again after every reconnect.

        A broker without persistence forgets retained messages when it restarts; this
        keeps lookout's own (the tool list, for one) present anyway.
        """
        self._retained[topic] = payload
        if self._connected.is_set():
            await self.publish(topic, payload, qos=1, retain=True)

    def _publish_properties(
        self, correlation_data: bytes | None, expiry_s: float | None = None
    ) -> Properties | None:
        if self._settings.protocol != 5 or not (correlation_data or expiry_s):
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation_data:
            props.CorrelationData = correlation_data
        if expiry_s:
            props.MessageExpiryInterval = max(1, round(expiry_s))
        return props

    def _clear_later(self, topic: str, delay: float) -> None:
        async def clear() -> None:
            await asyncio.sleep(delay)  # a deadline, not a poll
            await self.publish(topic, b"", qos=1, retain=True)

        task = asyncio.create_task(clear(), name=f"clear-retained:{topic[:60]}")
        self._clears.add(task)
        task.add_done_callback(self._clears.discard)

    # -- construction ----------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        s = self._settings
        v5 = s.protocol == 5
        kwargs: dict[str, Any] = {}
        if v5:
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect.SessionExpiryInterval = s.session_expiry_s if self._persistent else 0
            kwargs["properties"] = connect
            kwargs["clean_start"] = not self._persistent
        else:
            kwargs["clean_session"] = not self._persistent
        if self._announce:
            will_props = None
            if self._will_delay_s and v5:
                will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
                will_props.WillDelayInterval = self._will_delay_s
            kwargs["will"] = aiomqtt.Will(
                self.status_topic, b"offline", qos=1, retain=True, properties=will_props
            )
        if s.tls:
            context = ssl.create_default_context(cafile=s.tls_ca_certs)
            if s.tls_insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            kwargs["tls_context"] = context
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=self.client_id,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            keepalive=s.keepalive_s,
            # Without it every QoS 1 round trip waits ~40 ms for Nagle + delayed ACK.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            **kwargs,
        )
        # Replies from many concurrent requests are in flight at once by design.
        client.pending_calls_threshold = 100_000
        client._client.manual_ack_set(True)  # see Message.ack
        return client


async def _unless_lost(publish: Coroutine[Any, Any, None], lost: asyncio.Future[None]) -> None:
    """Await ``publish``, giving up as soon as its connection is lost.

    A QoS 1 publish in flight when the link drops would otherwise wait for aiomqtt's
    10 s timeout before the caller retries on the new connection, holding back the rest
    of that request's replies. Retrying at once may deliver a copy twice, which QoS 1
    (at least once) allows.

    Raises:
        aiomqtt.MqttError: The connection was lost first (or the publish failed).
    """
    task = asyncio.get_running_loop().create_task(publish, name="mqtt-publish")
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Lost, or we are cancelled ourselves: either way this attempt is over.
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise aiomqtt.MqttError("connection lost while publishing")
    task.result()

"""A client that can only subscribe after it publishes still gets its terminal reply.

Home Assistant scripts publish a request and only then wait for the reply: their
subscription reaches the broker about 0.1 s later, and lookout often answers first.
``reply_retain`` keeps the terminal reply retained (with an MQTT 5 expiry) for them.
"""

from __future__ import annotations

import uuid

import pytest

from tests.mqttc import MqttTestClient, next_message, until_terminal

pytestmark = pytest.mark.e2e


async def test_reply_retain_reaches_a_subscriber_that_comes_after_the_answer(
    broker, worker_factory, mqtt
):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    worker = worker_factory(broker, prefix=prefix)
    worker.start()
    await worker.wait_online(mqtt)
    for retain, expect_late in ((False, False), (True, True)):
        rid = f"r{uuid.uuid4().hex[:10]}"
        reply = f"{prefix}/homeassistant/reply/{rid}"
        seen = await mqtt.subscribe(reply)  # only to know when lookout has answered
        body = {"id": rid, "reply_retain": retain}
        await mqtt.publish(f"{prefix}/homeassistant/health", body)
        (done,) = await until_terminal(seen, rid)
        assert done["type"] == "done"
        # Home Assistant's subscription arrives now, after the answer (MQTT 3.1.1).
        async with MqttTestClient(broker.host, broker.port, protocol=4) as late:
            queue = await late.subscribe(reply)
            if expect_late:
                got = await next_message(queue, timeout=5)
                assert got.retain and got.json()["id"] == rid and got.json()["type"] == "done"
            else:
                # The unretained answer is gone; prove the late client is live by a probe.
                await mqtt.publish(reply, b"probe")
                got = await next_message(queue, timeout=5)
                assert got.payload == b"probe"

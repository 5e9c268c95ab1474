"""The project's ACL on a real mosquitto: callers are confined to their own namespace."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest

from tests.broker import REPO, Broker
from tests.mqttc import NODELAY, MqttTestClient, next_message, request

pytestmark = pytest.mark.integration

USERS = {"lookout": "lookout-pw", "alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture
def acl_broker(tmp_path: Path):
    passwd = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd (package mosquitto) is required"
    for i, (user, password) in enumerate(USERS.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([tool, *flags, str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    acl = tmp_path / "acl"
    acl.write_text((REPO / "mosquitto" / "acl.example").read_text())
    acl.chmod(0o600)
    broker = Broker(password_file=passwd, acl_file=acl)
    broker.start()
    yield broker
    broker.close()


def login(broker: Broker, user: str) -> MqttTestClient:
    return MqttTestClient(broker.host, broker.port, username=user, password=USERS[user])


async def test_users_are_confined_and_lookout_serves_both(acl_broker: Broker, worker_factory):
    worker = worker_factory(
        acl_broker,
        prefix="lookout",
        config={
            "mqtt": {
                "username": "lookout",
                "password": USERS["lookout"],
                "client_id": f"lookout-{uuid.uuid4().hex[:6]}",
            },
            # The Home Assistant bridge asks for health on its own; keep the count exact.
            "homeassistant": {"discovery": False},
        },
    )
    worker.start()
    async with login(acl_broker, "alice") as alice, login(acl_broker, "bob") as bob:
        await worker.wait_online(alice)
        # Each is served in its own namespace.
        assert (await request(alice, "lookout", "alice", "health", {}))[-1]["type"] == "done"
        bob_replies = await bob.subscribe("lookout/bob/reply/+")
        # Alice listens in on Bob's namespace (mosquitto grants the subscription and
        # filters each delivery against the ACL) ...
        spy = await alice.subscribe("lookout/bob/#")
        # ... and tries to ask in his name: the broker drops the publish.
        await alice.publish("lookout/bob/health", {"id": "forged"}, qos=0)
        own = await request(bob, "lookout", "bob", "health", {"id": "real"})
        assert own[-1]["type"] == "done"
        first = await next_message(bob_replies)
        assert first.json()["id"] == "real"  # the forged request never reached lookout
        assert own[-1]["requests"]["by_kind"]["health"] == 2  # alice's and bob's
        # Bob's reply was published before Alice's next request; per-client ordering means
        # it would have reached her first had the ACL let it through.
        assert (await request(alice, "lookout", "alice", "health", {}))[-1]["type"] == "done"
        assert spy.empty()
        # Nor may she command Frigate: a login that may read frigate/# sees nothing of it.
        async with login(acl_broker, "lookout") as watcher:
            frigate_spy = await watcher.subscribe("frigate/#")
            await alice.publish("frigate/front_door/detect/set", b"OFF", qos=0)
            await watcher.publish("frigate/marker", b"after", qos=1)
            assert (await next_message(frigate_spy)).topic == "frigate/marker"
    assert "lookout-pw" not in worker.log_text()


async def test_wrong_password_stops_with_a_clear_error(acl_broker: Broker, tmp_path: Path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {acl_broker.port}, username: lookout, password: wrong-secret}}\n"
        f"store: {{url: 'sqlite:///{tmp_path}/x.db'}}\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", "run", "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=30,
    )  # fmt: skip
    assert out.returncode == 3
    assert "refused the credentials" in out.stderr
    assert "wrong-secret" not in out.stderr + out.stdout


async def test_anonymous_clients_are_refused(acl_broker: Broker):
    client = aiomqtt.Client(acl_broker.host, acl_broker.port, socket_options=NODELAY)
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass

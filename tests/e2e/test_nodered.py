"""The Node-RED example flow in a real Node-RED, answered by the real lookout.

Node-RED 4 is installed from npm into ``.cache/node-red`` on first use (about 20 s),
then reused. ``examples/node-red/flows.json`` is imported as shipped, except for the
broker's address and the flow's environment variables (its topics), which point at
this test's broker and prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import REPO, free_port, stop_process
from tests.fake_llm import FakeLLM, text, tool_calls
from tests.mqttc import next_message

pytestmark = pytest.mark.e2e

FLOWS = REPO / "examples" / "node-red" / "flows.json"
NODE_RED_DIR = REPO / ".cache" / "node-red"
RED_JS = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"


def ensure_node_red() -> Path:
    """Node-RED's entry script, installed from npm if it is not there yet."""
    if RED_JS.exists():
        return RED_JS
    npm = shutil.which("npm")
    assert npm, "npm (Node.js 20) is required for the Node-RED test"
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "node-red@4"],
        cwd=NODE_RED_DIR, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and RED_JS.exists(), f"npm install node-red failed:\n{done.stderr}"
    return RED_JS


def configured_flows(host: str, port: int, env: dict[str, str], birth: str) -> list[dict[str, Any]]:
    flows = json.loads(FLOWS.read_text())
    for node in flows:
        if node["type"] == "mqtt-broker":
            node.update(broker=host, port=str(port), birthTopic=birth)
        if node["type"] == "tab":
            for var in node["env"]:
                var["value"] = env.get(var["name"], var["value"])
    return flows


class NodeRed:
    def __init__(self, userdir: Path, flows: list[dict[str, Any]]) -> None:
        self.userdir = userdir
        self.port = free_port()
        userdir.mkdir(parents=True, exist_ok=True)
        (userdir / "flows.json").write_text(json.dumps(flows, indent=2))
        settings = {
            "uiHost": "127.0.0.1",
            "uiPort": self.port,
            "flowFile": "flows.json",
            "credentialSecret": False,
            "httpAdminRoot": False,
            "logging": {"console": {"level": "info"}},
            "editorTheme": {"tours": False},
        }
        (userdir / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")
        self.log = userdir / "node-red.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, red_js: Path) -> None:
        node = shutil.which("node")
        assert node, "node (Node.js 20) is required for the Node-RED test"
        self.proc = subprocess.Popen(
            [node, str(red_js), "--userDir", str(self.userdir),
             "--settings", str(self.userdir / "settings.js")],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_RED_ENABLE_PROJECTS": "false"},
        )  # fmt: skip

    def stop(self) -> None:
        stop_process(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def node_red(tmp_path: Path) -> Iterator[Any]:
    red_js = ensure_node_red()
    started: list[NodeRed] = []

    def start(flows: list[dict[str, Any]]) -> NodeRed:
        nr = NodeRed(tmp_path / "node-red", flows)
        nr.start(red_js)
        started.append(nr)
        return nr

    yield start
    for nr in started:
        nr.stop()


@pytest.mark.timeout(600)  # the first run installs Node-RED from npm (about 20 s, more on CI)
async def test_the_example_flow_asks_lookout_and_handles_a_watch_alert(
    broker, worker_factory, mqtt, node_red
):
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    base = f"nr{uuid.uuid4().hex[:8]}"
    topics = {
        "LOOKOUT_PREFIX": prefix,
        "LOOKOUT_USER": "nodered",
        "ASK_TOPIC": f"{base}/ask",
        "REPLY_TOPIC": f"{base}/replies",
        "ANSWER_TOPIC": f"{base}/answer",
        "ALERT_TOPIC": f"{prefix}/+/watch/+/alert",
        "NOTIFY_TOPIC": f"{base}/notify",
    }
    async with FakeLLM() as fake:
        provider = {"base_url": fake.base_url, "api_key": "sk-x", "model": "fake-model",
                    "max_retries": 0, "timeout_s": 5}  # fmt: skip
        worker = worker_factory(
            broker, prefix=prefix,
            config={"llm": {"providers": {"fake": provider}}, "frigate": {"topic_prefix": f"{prefix}fr"}},
        )  # fmt: skip
        worker.start()
        await worker.wait_online(mqtt)

        birth = await mqtt.subscribe(f"{base}/status")
        answers = await mqtt.subscribe(topics["ANSWER_TOPIC"])
        notes = await mqtt.subscribe(topics["NOTIFY_TOPIC"])
        requests = await mqtt.subscribe(f"{prefix}/nodered/chat")
        nr = node_red(configured_flows(broker.host, broker.port, topics, f"{base}/status"))
        started = time.monotonic()
        try:
            # The birth message follows the flow's subscriptions on the same connection.
            assert (await next_message(birth, 30)).payload == b"online"
        except TimeoutError:
            pytest.fail(f"Node-RED did not connect:\n{nr.log_text()}")
        ready_s = time.monotonic() - started

        fake.push(
            tool_calls([("search_objects", {"label": "person"})]), text("Alice came by at noon.")
        )
        await mqtt.publish(topics["ASK_TOPIC"], b"Who came by today?", qos=1)
        try:
            answer = (await next_message(answers, 30)).json()
        except TimeoutError:
            pytest.fail(
                f"no answer through Node-RED:\n{nr.log_text()}\n{worker.log_text()[-3000:]}"
            )
        assert answer["ok"] is True, answer
        assert answer["answer"] == "Alice came by at noon."
        assert answer["question"] == "Who came by today?"
        assert answer["tools"] == ["search_objects"] and answer["conversation_id"]
        # The request went out as MQTT 5 request/response: Correlation Data set, no
        # reply_to in the payload (lookout answered on the Response Topic alone).
        sent = await next_message(requests)
        assert sent.correlation_data == answer["correlation"].encode()
        body = sent.json()
        assert body["text"] == "Who came by today?" and "reply_to" not in body
        assert body["stream"] is False

        alert = {"job_id": "j1", "camera": "front_door", "condition": "a parcel is delivered",
                 "message": "A parcel is on the porch.", "reasoning": "A box by the door.",
                 "status": "success", "end_reason": "condition_met"}  # fmt: skip
        await mqtt.publish(f"{prefix}/alice/watch/j1/alert", alert, qos=1)
        note = (await next_message(notes, 10)).json()
        assert note["title"] == "front_door: a parcel is delivered"
        assert note["message"] == "A parcel is on the porch."
        assert note["user"] == "alice" and note["job_id"] == "j1"
        assert note["snapshot_topic"] == f"{prefix}/alice/watch/j1/snapshot"
        print(f"node-red ready in {ready_s:.2f} s")

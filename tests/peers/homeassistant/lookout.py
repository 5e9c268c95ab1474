"""The real `lookout run` next to the real Home Assistant, and the examples installed in it.

lookout runs on Home Assistant's broker with the topic prefix the examples are written
for (``lookout``), its Home Assistant discovery on, and the fake model of
``tests/fake_llm.py`` as its only provider. :class:`Model` answers chats with an echo of
the question (so every answer names its question) and watch checks by the colour of the
frame: red means the condition is met, anything else that it is not.

The examples are installed as a user would: the package copied to ``packages/`` with the
phone's notify action put in place of ``notify.mobile_app_your_phone``, the blueprint copied
to ``blueprints/script/lookout/`` with a script made from it, and the README's Home
Assistant snippets (read from README.md itself) in a package of their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from tests.broker import REPO, Broker
from tests.conftest import Worker
from tests.fake_llm import FakeLLM, RecordedRequest, Reply, text
from tests.frigate_replay import tracked_object
from tests.mqttc import MqttTestClient, next_message
from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.ws import HaWebSocket

PREFIX = "lookout"
"""lookout's default ``mqtt.topic_prefix``: the examples' topics are written for it."""
USER = "homeassistant"
"""lookout's default ``homeassistant.user``: the caller the examples ask as."""
EXAMPLES = REPO / "examples" / "homeassistant"
PACKAGE = EXAMPLES / "lookout_package.yaml"
BLUEPRINT = EXAMPLES / "blueprints" / "script" / "lookout" / "tell_me_when.yaml"
README = REPO / "README.md"
PHONE_PLACEHOLDER = "notify.mobile_app_your_phone"
README_PHONE_PLACEHOLDER = "notify.mobile_app_phone"
CAMERAS = ("porch", "garage", "driveway")
RED, BLUE = (0, 0, 255), (255, 0, 0)
BLUEPRINT_SCRIPT = "lookout_tell_me_when"
"""The script made from the blueprint (``script.lookout_tell_me_when``)."""


# -- the fake model ------------------------------------------------------------------------


def jpeg(colour: tuple[int, int, int]) -> bytes:
    """A small JPEG of one colour, with a stamp so that no two frames are the same."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = colour
    stamp = f"{time.monotonic_ns() % 100_000}"
    cv2.putText(image, stamp, (5, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (128, 128, 128), 2)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _is_red(data: bytes) -> bool:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = image.reshape(-1, 3).mean(axis=0)
    return bool(r > max(b, g))


def _watch_frame(request: RecordedRequest) -> bytes | None:
    """The frame of a watch check (lookout's system prompt for watches), else None."""
    messages = request.messages
    if not messages or "watch one security camera" not in str(messages[0].get("content")):
        return None
    content = messages[-1].get("content")
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "image_url":
            return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    return None


def question_of(message: dict[str, Any]) -> str:
    """The user's words in a chat message (lookout stamps them ``[sent <time>] …``)."""
    content = message.get("content")
    return re.sub(r"^\[sent [^]]*\]\s*", "", content) if isinstance(content, str) else ""


def answer_to(question: str) -> str:
    """What :class:`Model` answers to a question."""
    return f"lookout heard: {question}"


class Model:
    """The fake model's responder; tests set how fast it is and what it says."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.delay_s = 0.0
        """Spread over the answer's chunks: a slow model (0: instant, the race)."""
        self.chat_reply: Reply | None = None
        """Answer every chat with this instead (an HTTP error, say)."""
        self.responder: Callable[[RecordedRequest], Reply | Awaitable[Reply] | None] | None = None
        """Asked first for every chat request; None from it means: answer as usual."""

    def __call__(self, request: RecordedRequest) -> Reply:
        frame = _watch_frame(request)
        if frame is not None:
            met = _is_red(frame)
            verdict = {
                "condition_met": met,
                "next_run_in": 300,
                "reasoning": "A red parcel lies on the porch." if met else "An empty scene.",
                "notification_message": "The parcel is on the porch." if met else "",
            }
            return self._slowly(json.dumps(verdict))
        if self.responder is not None:
            scripted = self.responder(request)
            if scripted is not None:
                return scripted  # type: ignore[return-value]
        if self.chat_reply is not None:
            return self.chat_reply
        return self._slowly(answer_to(question_of(request.last_message or {})))

    def _slowly(self, answer: str, chunks: int = 8) -> Reply:
        """The answer streamed in ``chunks`` pieces over ``delay_s`` in all."""
        size = max(1, -(-len(answer) // chunks))
        return text(answer, chunk_size=size, delay_s=self.delay_s / chunks)


# -- lookout ---------------------------------------------------------------------------------


class Lookout:
    """`lookout run` on Home Assistant's broker, restarted with another configuration when
    a test needs one (its database stays, so watches resume)."""

    def __init__(self, broker: Broker, workdir: Path, fake: FakeLLM, model: Model) -> None:
        self.broker = broker
        self.workdir = workdir
        self.fake = fake
        self.model = model
        self.worker: Worker | None = None
        self.config: dict[str, Any] | None = None

    def default_config(self) -> dict[str, Any]:
        return {
            # A client id per run: a run never inherits the session of the one before.
            "mqtt": {"client_id": f"lookout-ha-{uuid.uuid4().hex[:8]}"},
            "llm": {
                "providers": {
                    "fake": {
                        "base_url": self.fake.base_url,
                        "model": "fake-model",
                        "max_retries": 0,
                        "timeout_s": 30,
                    }
                }
            },
            "frigate": {"cameras": {c: {"friendly_name": c.title()} for c in CAMERAS}},
            "watch": {"min_interval_s": 0.5},
            "log": {"level": "info", "format": "json"},
        }

    def _config(self, overrides: dict[str, Any]) -> dict[str, Any]:
        config = self.default_config()
        for key, value in overrides.items():
            if value is None:
                config.pop(key, None)
            elif isinstance(value, dict):
                config[key] = {**config.get(key, {}), **value}
            else:
                config[key] = value
        return config

    @property
    def running(self) -> bool:
        return (
            self.worker is not None
            and self.worker.proc is not None
            and (self.worker.proc.poll() is None)
        )

    async def start(self, ha: HomeAssistant, **overrides: Any) -> None:
        """Start lookout (``overrides`` per section; ``None`` drops a section) and wait
        until Home Assistant shows it online."""
        await self.stop(ha)
        self.config = overrides
        worker = Worker(self.broker, self.workdir, PREFIX, self._config(overrides))
        self.worker = worker
        worker.start()
        async with MqttTestClient(self.broker.host, self.broker.port) as client:
            await worker.wait_online(client, timeout=30)
        if overrides.get("homeassistant", {}).get("discovery", True):
            await ha.wait_for_state(
                "binary_sensor.lookout_broker_connection",
                lambda s: s is not None and s["state"] == "on",
            )

    async def ensure(self, ha: HomeAssistant, **overrides: Any) -> None:
        """Running with exactly these overrides (restarted only when it is not)."""
        if not self.running or self.config != overrides:
            await self.start(ha, **overrides)

    async def stop(self, ha: HomeAssistant | None = None) -> None:
        if self.worker is None:
            return
        worker, self.worker = self.worker, None
        log_start = self.log_size()
        await asyncio.to_thread(worker.stop)
        if ha is None:
            return
        try:
            await ha.wait_for_state(
                "binary_sensor.lookout_broker_connection",
                lambda s: s is None or s["state"] != "on",
            )
        except AssertionError as exc:
            # What lookout did on its way out: whether it said offline, and how it ended.
            goodbye = self.log_text(log_start).splitlines()[-15:]
            raise AssertionError(
                f"{exc}\nlookout exited with {worker.proc and worker.proc.returncode}; "
                "the end of its log:\n" + "\n".join(goodbye)
            ) from None

    def log_size(self) -> int:
        """Where the log file ends now (it holds every run of the session)."""
        path = self.workdir / "lookout.log"
        return path.stat().st_size if path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        """The log from byte ``since`` on (a :meth:`log_size`) to its end."""
        path = self.workdir / "lookout.log"
        if not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    # -- MQTT, as lookout's other clients (Frigate, the cameras) ---------------------------

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = False
    ) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        async with MqttTestClient(self.broker.host, self.broker.port) as client:
            await client.publish(topic, data, qos=1, retain=retain)

    async def frame(self, camera: str, colour: tuple[int, int, int]) -> None:
        """A camera frame on lookout's frame topic (what the watch looks at)."""
        await self.publish(f"{PREFIX}/camera/{camera}/frame", jpeg(colour))

    async def retained(self, topic: str, timeout: float = 10) -> dict[str, Any]:
        """The retained JSON on a topic."""
        async with MqttTestClient(self.broker.host, self.broker.port) as client:
            message = await next_message(await client.subscribe(topic), timeout)
        return message.json()  # type: ignore[no-any-return]

    async def request(
        self, kind: str, body: dict[str, Any], timeout: float = 20, user: str = USER
    ) -> Any:
        """A request as Home Assistant's lookout user (or ``user``); its terminal reply."""
        request_id = f"t{uuid.uuid4().hex[:12]}"
        async with MqttTestClient(self.broker.host, self.broker.port) as client:
            replies = await client.subscribe(f"{PREFIX}/{user}/reply/{request_id}")
            await client.publish(f"{PREFIX}/{user}/{kind}", {**body, "id": request_id})
            async with asyncio.timeout(timeout):
                while True:
                    reply = (await replies.get()).json()
                    if reply["type"] in ("done", "error"):
                        return reply


# -- the examples -----------------------------------------------------------------------------


def readme_section(title: str, until: str = "\n## ") -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.find(until, start + len(title))
    return text[start : end if end != -1 else None]


def yaml_blocks(section: str) -> list[str]:
    """The ```yaml blocks of a README section, dedented."""
    return [
        textwrap.dedent(block)
        for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    ]


def readme_snippets(phone: str) -> dict[str, Any]:
    """The README's Home Assistant snippets as one package.

    - the caller of ``script.lookout_ask`` (Home Assistant section, step 3) becomes the
      script ``readme_ask`` (its ``question`` a field);
    - the watch section's snapshot image and phone automation go in as they are, with the
      test phone for ``notify.mobile_app_phone``;
    - the automation "without discovery" (end of the Home Assistant section) goes in as
      ``readme_any_alert``.
    """
    ha_blocks = [yaml.safe_load(b) for b in yaml_blocks(readme_section("## Home Assistant"))]
    (ask,) = [
        b for b in ha_blocks if isinstance(b, list) and b[0].get("action") == "script.lookout_ask"
    ]
    (direct,) = [b for b in ha_blocks if isinstance(b, dict) and "triggers" in b]
    watch = readme_section("### `watch`", "\n### ")
    (alerts,) = [
        yaml.safe_load(b.replace(README_PHONE_PLACEHOLDER, phone))
        for b in yaml_blocks(watch)
        if "automation:" in b
    ]
    ask[0]["data"]["question"] = "{{ question }}"
    return {
        "script": {
            "readme_ask": {
                "fields": {"question": {"required": True}},
                "sequence": ask,
            }
        },
        "mqtt": alerts["mqtt"],
        "automation": [
            {"id": "readme_watch_alert", **alerts["automation"][0]},
            {"id": "readme_any_alert", "alias": "readme: any alert", **direct},
        ],
    }


def example_text(path: Path) -> str:
    """An example as this work tree has it, or as the commit named by
    ``LOOKOUT_HA_EXAMPLES_REV`` had it (to see which tests fail on older examples)."""
    rev = os.environ.get("LOOKOUT_HA_EXAMPLES_REV")
    if not rev:
        return path.read_text()
    shown = subprocess.run(
        ["git", "show", f"{rev}:{path.relative_to(REPO)}"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return shown.stdout


def package_text(phone: str, source: str | None = None) -> str:
    text = source if source is not None else example_text(PACKAGE)
    assert PHONE_PLACEHOLDER in text
    return text.replace(PHONE_PLACEHOLDER, phone)


async def phone_device_id(ha: HomeAssistant, name: str = "Test phone") -> str:
    devices = await ha.ws.command({"type": "config/device_registry/list"})
    (device,) = [d for d in devices if d["name"] == name]
    return str(device["id"])


async def install_examples(
    ha: HomeAssistant, *, package: str | None = None, blueprint: str | None = None
) -> None:
    """The examples (these texts instead of the files, to try old ones) and the README's
    snippets in Home Assistant's config directory, reloaded."""
    assert ha.phone is not None
    ha.add_file("packages/lookout.yaml", package_text(ha.phone, package))
    ha.add_file(
        "blueprints/script/lookout/tell_me_when.yaml",
        blueprint if blueprint is not None else example_text(BLUEPRINT),
    )
    script = {
        "script": {
            BLUEPRINT_SCRIPT: {
                "alias": "lookout: tell me when",
                "use_blueprint": {
                    "path": "lookout/tell_me_when.yaml",
                    "input": {"phone": await phone_device_id(ha)},
                },
            }
        }
    }
    ha.add_file("packages/lookout_tell_me_when.yaml", yaml.safe_dump(script))
    ha.add_file("packages/lookout_readme.yaml", yaml.safe_dump(readme_snippets(ha.phone)))
    await ha.call_service("homeassistant", "reload_all", timeout=120)
    await ha.mqtt_barrier()


# -- the custom integration (custom_components/lookout) ---------------------------------------

INTEGRATION = REPO / "custom_components" / "lookout"
"""The integration as the repository ships it; the harness copies it into the config."""
LLM_PROBE = Path(__file__).parent / "llm_probe" / "lookout_llm_probe"
"""A test-only integration that uses LLM APIs the way conversation agents do."""
HA_INTEGRATIONS = ("assist_pipeline", "diagnostics", "lookout_llm_probe")
"""Set up from configuration.yaml besides the harness's own (default_config would have
the first two)."""
LOOKOUT_USERS = {
    "homeassistant": {"role": "admin"},
    "porch_viewer": {"role": "viewer", "cameras": ["porch"]},
}
"""lookout's users for the integration's tests: Home Assistant's default lookout user may
do anything, the porch viewer sees the porch camera and nothing else."""
DOMAIN = "lookout"
AGENT = "conversation.lookout"
FLOW = "/api/config/config_entries/flow"
OPTIONS_FLOW = "/api/config/config_entries/options/flow"


async def integration_entries(ha: HomeAssistant) -> list[dict[str, Any]]:
    """The lookout config entries, as the UI lists them."""
    entries = await ha.api("GET", f"/api/config/config_entries/entry?domain={DOMAIN}")
    return [e for e in entries if e["domain"] == DOMAIN]


async def add_integration(
    ha: HomeAssistant, flow: dict[str, Any] | None = None, **answer: Any
) -> dict[str, Any]:
    """The config flow through the REST API, as the UI drives it: the form (or the form
    ``flow`` showed last, to answer it again), then the answer (the form's defaults for
    what ``answer`` leaves out); the flow's result."""
    form = flow or await ha.api("POST", FLOW, {"handler": DOMAIN})
    assert form["type"] == "form" and form["step_id"] == "user", form
    defaults = {field["name"]: field.get("default") for field in form["data_schema"]}
    return await ha.api(  # type: ignore[no-any-return]
        "POST", f"{FLOW}/{form['flow_id']}", {**defaults, **answer}
    )


async def loaded_entry(ha: HomeAssistant) -> dict[str, Any]:
    """The loaded lookout entry (added through the config flow if there is none)."""
    entries = await integration_entries(ha)
    if not entries:
        result = await add_integration(ha)
        assert result["type"] == "create_entry", result
        # Its subscriptions (lookout's retained status and tools) are through.
        await ha.mqtt_barrier()
        entries = await integration_entries(ha)
    (entry,) = entries
    assert entry["state"] == "loaded", entry
    return entry


async def options_flow(
    ha: HomeAssistant, entry_id: str, step: str, answer: dict[str, Any]
) -> dict[str, Any]:
    """One pass through the options: the menu, the step, the answer; the last result."""
    menu = await ha.api("POST", OPTIONS_FLOW, {"handler": entry_id})
    assert menu["type"] == "menu" and step in menu["menu_options"], menu
    form = await ha.api("POST", f"{OPTIONS_FLOW}/{menu['flow_id']}", {"next_step_id": step})
    assert form["type"] == "form" and form["step_id"] == step, form
    return await ha.api(  # type: ignore[no-any-return]
        "POST", f"{OPTIONS_FLOW}/{menu['flow_id']}", answer
    )


async def frigate_objects(service: Lookout, objects: list[tuple[str, str]]) -> list[str]:
    """Frigate's ``new`` event for each ``(camera, label)``, as Frigate publishes it; the
    object ids (lookout stores them as they come)."""
    now = time.time()
    ids = []
    for n, (camera, label) in enumerate(objects):
        oid = f"{now:.6f}-{uuid.uuid4().hex[:6]}"
        obj = tracked_object(oid, camera, label, now - 60 + n, now - 60 + n)
        await service.publish("frigate/events", {"type": "new", "before": obj, "after": obj})
        ids.append(oid)
    return ids


async def stored(service: Lookout, ids: list[str], timeout: float = 15) -> None:
    """Wait until lookout's history holds these objects (``search_objects`` as an admin)."""
    body = {"tool_name": "search_objects", "arguments": {"limit": 100}}
    async with asyncio.timeout(timeout):
        while True:
            reply = await service.request("tool", body)
            found = {o["id"] for o in reply.get("result", {}).get("objects", [])}
            if set(ids) <= found:
                return
            await asyncio.sleep(0.1)  # re-ask cadence: lookout tells no one it has stored


async def ask(
    ws: HaWebSocket, text_: str, conversation_id: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    """``conversation/process`` with the lookout agent, as the websocket's user."""
    command = {"type": "conversation/process", "text": text_, "agent_id": AGENT, "language": "en"}
    if conversation_id is not None:
        command["conversation_id"] = conversation_id
    return await ws.command(command, timeout=timeout)  # type: ignore[no-any-return]


def speech(result: dict[str, Any]) -> str:
    return str(result["response"]["speech"]["plain"]["speech"])


async def pipeline_id(ha: HomeAssistant) -> str:
    pipelines = await ha.ws.command({"type": "assist_pipeline/pipeline/list"})
    for pipeline in pipelines["pipelines"]:
        if pipeline["conversation_engine"] == AGENT:
            return str(pipeline["id"])
    created = await ha.ws.command(
        {"type": "assist_pipeline/pipeline/create", "name": "lookout",
         "conversation_engine": AGENT, "conversation_language": "en", "language": "en",
         "stt_engine": None, "stt_language": None, "tts_engine": None, "tts_language": None,
         "tts_voice": None, "wake_word_entity": None, "wake_word_id": None}
    )  # fmt: skip
    return str(created["id"])


async def run_pipeline(ha: HomeAssistant, text_: str) -> list[tuple[float, dict[str, Any]]]:
    """An Assist pipeline run on text (intent stage only); its events with arrival times."""
    payload = {
        "type": "assist_pipeline/run", "start_stage": "intent", "end_stage": "intent",
        "input": {"text": text_}, "pipeline": await pipeline_id(ha),
    }  # fmt: skip
    events: list[tuple[float, dict[str, Any]]] = []
    async with ha.subscription(payload) as run:
        while not events or events[-1][1]["type"] != "run-end":
            events.append(((time.monotonic()), await run.next(timeout=60)))
    return events


def streams(ha_version: str) -> bool:
    """Releases whose agents stream into a chat log that pipelines forward (2025.4 does;
    2024.11 has no chat log)."""
    major, minor = (int(p) for p in ha_version.split(".")[:2])
    return (major, minor) >= (2025, 4)

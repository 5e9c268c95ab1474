"""A real Home Assistant that tests start, drive and read.

``scripts/homeassistant`` installs a pinned release into its own Python 3.13 venv
(``.cache/homeassistant/<version>/venv``). ``HomeAssistant`` writes a fresh config
directory, runs ``hass --skip-pip`` on a free 127.0.0.1 port, onboards it through its
own HTTP API (as the frontend does), takes a long-lived token, and then talks to it over
REST and the websocket API. Everything waits on events (log lines of the process, websocket
events, MQTT messages, HTTP requests from Home Assistant), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from tests.broker import REPO, free_port
from tests.peers.homeassistant.push import PushCapture
from tests.peers.homeassistant.ws import HaWebSocket, Subscription

INSTALL_SCRIPT = REPO / "scripts" / "homeassistant"

# What bootstrap.py logs at INFO once the integrations are set up (HTTP is listening).
READY_MARKER = "Home Assistant initialized in"
# The MQTT config flow's default protocol (homeassistant/components/mqtt/const.py).
DEFAULT_MQTT_PROTOCOL = "3.1.1"
# Log records every run of this harness produces and that say nothing about a test.
EXPECTED_LOG_NOISE = (
    # bootstrap.py, because the harness runs hass with --skip-pip on purpose.
    r"WARNING \(MainThread\) \[homeassistant\.bootstrap\] Skipping pip installation",
    # loader.py, once per custom integration the harness installs (``custom_components``).
    r"WARNING \(\w+\) \[homeassistant\.loader\] We found a custom integration "
    r"(lookout|lookout_llm_probe) which has not been tested by Home Assistant",
    # The ffmpeg integration (a dependency of tts, which assist_pipeline needs) asks the
    # ffmpeg binary for its version at setup; the test machines have none (Home Assistant's
    # own image does), and the tests run Assist pipelines on text, which needs no ffmpeg.
    r"ERROR \(MainThread\) \[haffmpeg\.core\] FFmpeg fails \[Errno 2\] No such file "
    r"or directory: 'ffmpeg'",
    r"WARNING \(MainThread\) \[haffmpeg\.tools\] Error starting FFmpeg\.",
)
RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) \((?P<thread>[^)]*)\) \[(?P<logger>[^]]+)\]"
)


class HomeAssistantError(RuntimeError):
    """Home Assistant could not be installed, started or driven."""


def install(timeout: float = 900) -> Path:
    """The venv's ``hass``, installed by scripts/homeassistant first if it is missing.

    ``HA_HASS`` names a ``hass`` installed some other way instead (its release is read
    from its path, ``…/<release>/venv/bin/hass``), e.g. a release newer than the Python
    of this machine allows, tried by hand.
    """
    if os.environ.get("HA_HASS"):
        return Path(os.environ["HA_HASS"])
    try:
        done = subprocess.run(
            [str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HomeAssistantError(f"scripts/homeassistant took over {timeout} s") from exc
    if done.returncode != 0:
        raise HomeAssistantError(f"scripts/homeassistant failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class CheckConfigResult:
    """What ``hass --script check_config`` said.

    Its exit code alone is not enough: an automation or script that fails validation is
    only logged (``ERROR:homeassistant.components.script:…``) and the exit code stays 0;
    it is non-zero for errors in the configuration's structure ("Failed config").
    """

    returncode: int
    output: str

    @property
    def errors(self) -> list[str]:
        return [
            line for line in self.output.splitlines()
            if line.startswith(("ERROR:", "CRITICAL:")) or "Failed config" in line
        ]  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.errors


@dataclass(frozen=True)
class HaUser:
    """A person of this Home Assistant (``HomeAssistant.add_user``) and their websocket."""

    id: str
    name: str
    token: str
    ws: HaWebSocket


class HomeAssistant:
    """One Home Assistant process with its own config directory and port.

    Typical use: ``start()``, ``onboard()``, ``setup_mqtt(host, port)``,
    ``register_phone()``; then ``add_file()`` + ``reload()``, ``call_service()``,
    ``wait_for_state()`` …; finally ``close()``.
    """

    def __init__(
        self,
        hass: Path,
        config_dir: Path,
        *,
        log_level: str = "info",
        debug_loggers: Iterable[str] = (),
        custom_components: Iterable[Path] = (),
        integrations: Iterable[str] = (),
    ) -> None:
        self.hass = hass
        self.config_dir = config_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # indieauth: the frontend's client_id is its own origin with a slash.
        self.client_id = f"{self.base_url}/"
        self.log_file = config_dir / "home-assistant.log"
        self.console_file = config_dir / "console.log"
        self.token: str | None = None
        # The owner's (username, password), for a test that logs in the way a person does.
        self.admin: tuple[str, str] | None = None
        self.push = PushCapture()
        # The notify action of the phone register_phone() made last.
        self.phone: str | None = None
        self.mqtt_host: str | None = None
        self.mqtt_port: int | None = None
        self._log_level = log_level
        self._debug_loggers = list(debug_loggers)
        # Folders copied into config/custom_components/ before the start, and integrations
        # set up from configuration.yaml (``<domain>:``) besides the harness's own.
        self._custom_components = list(custom_components)
        self._integrations = list(integrations)
        self._proc: asyncio.subprocess.Process | None = None
        self._console: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: HaWebSocket | None = None
        # Websockets of the people add_user() made (closed with the harness's own).
        self._user_sockets: list[HaWebSocket] = []
        # Seconds each stage took (start, onboard, setup_mqtt, register_phone), for reports.
        self.timings: dict[str, float] = {}
        self.write_config()

    @property
    def release(self) -> str:
        """The release scripts/homeassistant installed: its venv is
        .cache/homeassistant/<release>/venv, and ``hass`` is venv/bin/hass."""
        return self.hass.parents[2].name

    # -- configuration -------------------------------------------------------------------

    def write_config(self) -> None:
        """configuration.yaml with only what the tests need (no default_config).

        default_config would add zeroconf, ssdp, dhcp, bluetooth, cloud, go2rtc … which
        probe the network or need packages the venv does not have.
        """
        for folder in ("packages", "blueprints/automation", "blueprints/script"):
            (self.config_dir / folder).mkdir(parents=True, exist_ok=True)
        logs = "".join(f"    {name}: debug\n" for name in self._debug_loggers)
        for folder in self._custom_components:
            target = self.config_dir / "custom_components" / folder.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
        extra = "".join(f"{domain}:\n" for domain in self._integrations)
        (self.config_dir / "configuration.yaml").write_text(
            textwrap.dedent(f"""\
                homeassistant:
                  name: lookout tests
                  # Set here, so onboarding's core_config step has nothing to ask.
                  latitude: 0
                  longitude: 0
                  elevation: 0
                  unit_system: metric
                  time_zone: UTC
                  currency: EUR
                  country: NL
                  language: en
                  packages: !include_dir_named packages
                http:
                  server_host: 127.0.0.1
                  server_port: {self.port}
                api:
                websocket_api:
                config:
                onboarding:
                mqtt:
                mobile_app:
                notify:
                blueprint:
                system_log:
                logger:
                  default: {self._log_level}
                  logs:
                    # READY_MARKER is logged by bootstrap at INFO.
                    homeassistant.bootstrap: info
                """)
            + logs
            + extra
        )
        self._seed_core_config_step()

    def _seed_core_config_step(self) -> None:
        """Mark onboarding's core_config step done in its store before the first start.

        POST /api/onboarding/core_config only marks the step done and then starts the
        onboarding flows of met, radio_browser, google_translate and shopping_list
        (onboarding/views.py, CoreConfigOnboardingView.post). Their packages are not
        installed (--skip-pip: ERRORs in the log) and radio_browser would reach for the
        internet. The location is set in configuration.yaml instead. The other three
        steps go through the HTTP API.
        """
        store = self.config_dir / ".storage" / "onboarding"
        if store.exists():
            return
        store.parent.mkdir(parents=True, exist_ok=True)
        # onboarding/__init__.py: OnboardingStorage, STORAGE_VERSION 4, key "onboarding".
        store.write_text(
            json.dumps(
                {"version": 4, "minor_version": 1, "key": "onboarding",
                 "data": {"done": ["core_config"]}}
            )
        )  # fmt: skip

    def add_file(self, relative: str, text: str) -> Path:
        """Write a file into the config directory, e.g. ``packages/lookout.yaml`` or
        ``blueprints/script/lookout/tell_me_when.yaml``; call ``reload()`` afterwards."""
        path = self.config_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    # -- process -------------------------------------------------------------------------

    async def start(self, timeout: float = 120) -> None:
        """Start hass and wait for bootstrap to finish, then check that HTTP answers."""
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
        self._proc = await asyncio.create_subprocess_exec(
            str(self.hass), "-c", str(self.config_dir), "--skip-pip", "--log-no-color",
            "--log-file", str(self.log_file),
            stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        self._console = asyncio.create_task(self._pump_console(), name="hass-console")
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise HomeAssistantError(f"hass not ready in {timeout} s\n{self.tail()}") from None
        if self._proc.returncode is not None:
            raise HomeAssistantError(f"hass exited with {self._proc.returncode}\n{self.tail()}")
        self._session = aiohttp.ClientSession()
        # A bounded check, not a poll: after bootstrap the HTTP server is already listening.
        onboarding = await self.api("GET", "/api/onboarding", auth=False)
        if not isinstance(onboarding, list):
            raise HomeAssistantError(f"unexpected /api/onboarding answer: {onboarding}")
        self.timings["start"] = time.monotonic() - started

    async def _pump_console(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.console_file.open("ab") as out:
            async for line in self._proc.stdout:
                out.write(line)
                out.flush()
                if READY_MARKER.encode() in line:
                    self._ready.set()
        # End of output: the process is gone; wake start() so it reports that at once.
        await self._proc.wait()
        self._ready.set()

    async def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (Home Assistant's graceful stop), SIGKILL after ``timeout``."""
        await self._close_clients()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._console is not None:
            await self._console
        return proc.returncode

    async def close(self) -> None:
        await self.stop()
        await self.push.close()

    async def _close_clients(self) -> None:
        for socket in self._user_sockets:
            await socket.close()
        self._user_sockets.clear()
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise HomeAssistantError("Home Assistant is not started")
        return self._session

    async def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        auth: bool = True,
        expect: Iterable[int] = (200, 201),
        timeout: float = 60,
    ) -> Any:
        """One REST call; the answer's JSON (or text), or HomeAssistantError on a status
        outside ``expect``."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        async with self.session.request(
            method, self.base_url + path, json=json, headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:  # fmt: skip
            body = await _body(response)
            if response.status not in set(expect):
                raise HomeAssistantError(f"{method} {path}: HTTP {response.status}: {body}")
            return body

    # -- onboarding and tokens --------------------------------------------------------------

    async def onboard(self, username: str = "admin", password: str | None = None) -> None:
        """Onboarding as the frontend does it, then a long-lived access token.

        onboarding/views.py: POST users (gives an auth code), /auth/token (code grant),
        then analytics and integration with that token (core_config: see
        _seed_core_config_step).
        """
        started = time.monotonic()
        self.admin = (username, password or secrets.token_hex(8))
        created = await self.api(
            "POST", "/api/onboarding/users", auth=False,
            json={"client_id": self.client_id, "name": "Test Admin", "username": username,
                  "password": self.admin[1], "language": "en"},
        )  # fmt: skip
        self.token = await self._token_from_code(created["auth_code"])
        # core_config is already done: see _seed_core_config_step().
        await self.api("POST", "/api/onboarding/analytics", {})
        await self.api(
            "POST", "/api/onboarding/integration",
            {"client_id": self.client_id, "redirect_uri": f"{self.base_url}/?auth_callback=1"},
        )  # fmt: skip
        await self.connect_ws()
        self.token = await self.ws.command(
            {"type": "auth/long_lived_access_token", "client_name": "lookout tests",
             "lifespan": 365}
        )  # fmt: skip
        # Reconnect with the long-lived token: the short one expires after 30 minutes.
        await self.connect_ws()
        await self._wait_until_running()
        self.timings["onboard"] = time.monotonic() - started

    async def _token_from_code(self, code: str) -> str:
        async with self.session.post(
            f"{self.base_url}/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": self.client_id},
        ) as response:
            body = await _body(response)
            if response.status != 200:
                raise HomeAssistantError(f"/auth/token: HTTP {response.status}: {body}")
        return str(body["access_token"])

    async def add_user(self, name: str, *, admin: bool = False) -> HaUser:
        """A person (not the owner) with a login of the homeassistant auth provider, logged
        in through the login flow as the frontend does it, with a websocket of their own.

        config/auth.py creates the user, config/auth_provider_homeassistant.py its
        credentials; auth/login_flow (``/auth/login_flow``) gives the code for /auth/token.
        """
        username, password = _slug(name), secrets.token_hex(8)
        group = "system-admin" if admin else "system-users"
        created = await self.ws.command(
            {"type": "config/auth/create", "name": name, "group_ids": [group]}
        )
        user_id = str(created["user"]["id"])
        await self.ws.command(
            {"type": "config/auth_provider/homeassistant/create", "user_id": user_id,
             "username": username, "password": password}
        )  # fmt: skip
        flow = await self.api(
            "POST", "/auth/login_flow", auth=False,
            json={"client_id": self.client_id, "handler": ["homeassistant", None],
                  "redirect_uri": f"{self.base_url}/?auth_callback=1"},
        )  # fmt: skip
        done = await self.api(
            "POST", f"/auth/login_flow/{flow['flow_id']}", auth=False,
            json={"client_id": self.client_id, "username": username, "password": password},
        )  # fmt: skip
        if done.get("type") != "create_entry":
            raise HomeAssistantError(f"{name} could not log in: {done}")
        token = await self._token_from_code(done["result"])
        socket = HaWebSocket(self.session, f"{self.base_url}/api/websocket", token)
        await socket.connect()
        self._user_sockets.append(socket)
        return HaUser(user_id, name, token, socket)

    async def connect_ws(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self.token is None:
            raise HomeAssistantError("no token yet: onboard() first")
        self._ws = HaWebSocket(self.session, f"{self.base_url}/api/websocket", self.token)
        await self._ws.connect()

    @property
    def ws(self) -> HaWebSocket:
        if self._ws is None:
            raise HomeAssistantError("no websocket: onboard() first")
        return self._ws

    async def _wait_until_running(self, timeout: float = 60) -> None:
        """Bootstrap's log line comes before core's start; wait for homeassistant_started."""
        async with self.events("homeassistant_started") as started:
            config = await self.ws.command({"type": "get_config"})
            if config["state"] != "RUNNING":
                await started.next(timeout)

    # -- websocket helpers ---------------------------------------------------------------------

    async def call_service(
        self,
        domain: str,
        service: str,
        data: dict[str, Any] | None = None,
        *,
        target: dict[str, Any] | None = None,
        return_response: bool = False,
        timeout: float = 60,
    ) -> Any:
        """Call an action and wait for it to finish; its response if ``return_response``."""
        payload: dict[str, Any] = {
            "type": "call_service", "domain": domain, "service": service,
            "service_data": data or {}, "return_response": return_response,
        }  # fmt: skip
        if target is not None:
            payload["target"] = target
        result = await self.ws.command(payload, timeout=timeout)
        return result.get("response") if return_response else result

    async def get_state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object, or None if it does not exist."""
        state = await self.api("GET", f"/api/states/{entity_id}", expect=(200, 404))
        return state if isinstance(state, dict) and "entity_id" in state else None

    async def wait_for_state(
        self,
        entity_id: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        timeout: float = 30,
    ) -> dict[str, Any] | None:
        """The entity's state once ``predicate`` holds (now or after a state change).

        Raises:
            AssertionError: It did not within ``timeout`` seconds (with the state it has).
        """
        trigger = {"trigger": "state", "entity_id": entity_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drops = 0
        while True:
            try:
                async with self.subscription(
                    {"type": "subscribe_trigger", "trigger": trigger}
                ) as sub:
                    # Subscribed first, read second: no change can fall between the two.
                    state = await self.get_state(entity_id)
                    if predicate(state):
                        return state
                    event = await sub.wait_for(
                        lambda e: predicate(e["variables"]["trigger"]["to_state"]),
                        max(0.0, deadline - loop.time()),
                    )
                    return event["variables"]["trigger"]["to_state"]  # type: ignore[no-any-return]
            except ConnectionError:
                # The websocket dropped (see HaWebSocket._connected): the state is a level,
                # so subscribing again and reading it again loses nothing. A few times at
                # most: a connection that fails at once again is not a drop.
                drops += 1
                if loop.time() >= deadline or drops >= 3:
                    raise
            except TimeoutError:
                state = await self.get_state(entity_id)
                raise AssertionError(
                    f"{entity_id} did not reach the awaited state in {timeout} s; it is "
                    f"{state and state['state']!r} (websocket drops: {self.ws.drops})"
                ) from None

    @contextlib.asynccontextmanager
    async def subscription(self, payload: dict[str, Any]) -> AsyncIterator[Subscription]:
        """Any websocket subscription, ended when the block ends."""
        sub = await self.ws.subscribe(payload)
        try:
            yield sub
        finally:
            with contextlib.suppress(ConnectionError):
                await sub.unsubscribe()

    def events(
        self, event_type: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Events of one type (all if None) from the moment the block starts."""
        payload: dict[str, Any] = {"type": "subscribe_events"}
        if event_type is not None:
            payload["event_type"] = event_type
        return self.subscription(payload)

    async def fire_event(self, event_type: str, data: dict[str, Any] | None = None) -> None:
        await self.ws.command(
            {"type": "fire_event", "event_type": event_type, "event_data": data or {}}
        )

    async def set_log_levels(self, levels: dict[str, str]) -> None:
        """Change log levels at run time, e.g. ``{"homeassistant.components.mqtt": "debug"}``
        (``debug_loggers`` sets them from the start)."""
        await self.call_service("logger", "set_level", levels)

    async def reload(self, *domains: str) -> None:
        """Reload YAML of these domains (default: automation and script); the call
        returns once Home Assistant has applied it."""
        for domain in domains or ("automation", "script"):
            await self.call_service(domain, "reload")

    async def render_template(
        self, template: str, variables: dict[str, Any] | None = None, timeout: float = 10
    ) -> Any:
        """Render a template once (render_template subscription, first result)."""
        payload = {
            "type": "render_template", "template": template, "variables": variables or {},
            "strict": True, "report_errors": True,
        }  # fmt: skip
        async with self.subscription(payload) as sub:
            event = await sub.next(timeout)
        if "error" in event:
            raise HomeAssistantError(f"template error: {event['error']}")
        return event["result"]

    # -- MQTT ----------------------------------------------------------------------------------

    async def setup_mqtt(
        self, host: str, port: int, *, protocol: str = DEFAULT_MQTT_PROTOCOL, timeout: float = 60
    ) -> dict[str, Any]:
        """Add the MQTT integration through its config flow and wait for its birth message.

        The flow (mqtt/config_flow.py) starts at step "broker" outside the Supervisor; the
        protocol field is only in the advanced form, reached by submitting
        ``advanced_options: true`` in a flow started with ``show_advanced_options``.
        """
        started = time.monotonic()
        self.mqtt_host, self.mqtt_port = host, port
        advanced = protocol != DEFAULT_MQTT_PROTOCOL
        flow = await self.api(
            "POST", "/api/config/config_entries/flow",
            {"handler": "mqtt", "show_advanced_options": advanced},
        )  # fmt: skip
        if flow.get("step_id") != "broker":
            raise HomeAssistantError(f"unexpected MQTT flow: {flow}")
        step = f"/api/config/config_entries/flow/{flow['flow_id']}"
        answer: dict[str, Any] = {"broker": host, "port": port}
        if advanced:
            await self.api("POST", step, {**answer, "advanced_options": True})
            answer["protocol"] = protocol
        async with self._mqtt_client() as client:
            # Home Assistant says "online" on its birth topic only after its first
            # subscriptions are acknowledged (client.py _async_resubscribe_and_publish_birth_message).
            await client.subscribe("homeassistant/status", qos=1)
            result = await self.api("POST", step, answer)
            if result.get("type") != "create_entry":
                raise HomeAssistantError(f"the MQTT flow did not create an entry: {result}")
            await _next_payload(client, b"online", timeout)
        self.timings["setup_mqtt"] = time.monotonic() - started
        return result["result"]  # type: ignore[no-any-return]

    async def mqtt_barrier(self, timeout: float = 30) -> None:
        """Return once every MQTT subscription Home Assistant has queued so far is active
        at the broker.

        Home Assistant sends SUBSCRIBE only after a cooldown (mqtt/client.py,
        SUBSCRIBE_COOLDOWN 0.1 s, 0.5 s before its birth), so a trigger attached by a
        reload may miss a message published right after it. The barrier subscribes
        Home Assistant (websocket ``mqtt/subscribe``) to a fresh topic that holds a
        retained message: the broker delivers it only after handling that SUBSCRIBE, and
        it handles one client's packets in order, so every earlier one is active too.
        """
        topic = f"lookout-tests/barrier/{uuid.uuid4().hex}"
        async with self._mqtt_client() as client:
            await client.publish(topic, b"barrier", qos=1, retain=True)
            try:
                async with self.subscription({"type": "mqtt/subscribe", "topic": topic}) as sub:
                    await sub.wait_for(lambda e: e["topic"] == topic, timeout)
            finally:
                await client.publish(topic, b"", qos=1, retain=True)

    def _mqtt_client(self) -> aiomqtt.Client:
        if self.mqtt_host is None or self.mqtt_port is None:
            raise HomeAssistantError("setup_mqtt() first")
        return aiomqtt.Client(
            self.mqtt_host, self.mqtt_port, identifier=f"ha-harness-{uuid.uuid4().hex[:8]}"
        )

    # -- mobile_app ----------------------------------------------------------------------------

    async def register_phone(self, device_name: str = "Test phone") -> str:
        """Register a fake companion app whose pushes land in ``self.push``; return its
        notify action (``notify.mobile_app_<slug>``)."""
        await self.push.start()
        service = f"mobile_app_{_slug(device_name)}"
        registration = {
            "app_id": "io.lookout.tests", "app_name": "lookout tests", "app_version": "1.0",
            "device_name": device_name, "manufacturer": "lookout", "model": "harness",
            "os_name": "Linux", "os_version": "1", "supports_encryption": False,
            "device_id": uuid.uuid4().hex,
            "app_data": {"push_token": uuid.uuid4().hex, "push_url": self.push.url},
        }  # fmt: skip
        async with self.events("service_registered") as registered:
            await self.api("POST", "/api/mobile_app/registrations", registration)
            if not await self._has_service("notify", service):
                await registered.wait_for(
                    lambda e: e["data"] == {"domain": "notify", "service": service}
                )
        self.phone = f"notify.{service}"
        return self.phone

    async def _has_service(self, domain: str, service: str) -> bool:
        services = await self.ws.command({"type": "get_services"})
        return service in services.get(domain, {})

    # -- logs and config check -------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        """Home Assistant's log file, line by line (this run's: a restart rotates it to
        ``home-assistant.log.1``). Home Assistant writes it from a queue, a few ms late."""
        if not self.log_file.exists():
            return []
        return self.log_file.read_text(errors="replace").splitlines()

    def log_records(self) -> list[tuple[str, str]]:
        """(level, text) per log record; a traceback stays with its record."""
        records: list[tuple[str, str]] = []
        for line in self.log_lines():
            match = RECORD_START.match(line)
            if match:
                records.append((match["level"], line))
            elif records:
                level, text = records[-1]
                records[-1] = (level, f"{text}\n{line}")
        return records

    def errors_and_warnings(self, ignore: Iterable[str] = EXPECTED_LOG_NOISE) -> list[str]:
        """WARNING, ERROR and CRITICAL records, minus those matching ``ignore`` (regexes)."""
        patterns = [re.compile(p) for p in ignore]
        return [
            text
            for level, text in self.log_records()
            if level in {"WARNING", "ERROR", "CRITICAL"}
            and not any(p.search(text) for p in patterns)
        ]

    def tail(self, lines: int = 60) -> str:
        console = (
            self.console_file.read_text(errors="replace") if self.console_file.exists() else ""
        )
        return "\n".join(console.splitlines()[-lines:])

    async def check_config(self, timeout: float = 120) -> CheckConfigResult:
        """``hass --script check_config -c <dir>``: its exit code and output.

        It checks the files as they are now, in a separate process that reads the
        registries from ``.storage``. Home Assistant writes a changed registry there up to
        ten seconds later, so this first waits until every device the running Home
        Assistant knows is on disk: else a device action (``device_id:``, the blueprint's
        phone) is reported as "Unknown device".
        """
        await self._devices_on_disk()
        proc = await asyncio.create_subprocess_exec(
            str(self.hass), "--script", "check_config", "-c", str(self.config_dir),
            stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return CheckConfigResult(proc.returncode or 0, output.decode(errors="replace"))

    async def _devices_on_disk(self, timeout: float = 30) -> None:
        devices = await self.ws.command({"type": "config/device_registry/list"})
        wanted = {d["id"] for d in devices}
        path = self.config_dir / ".storage" / "core.device_registry"
        async with asyncio.timeout(timeout):
            while True:
                if path.exists():
                    with contextlib.suppress(ValueError):
                        saved = json.loads(path.read_text())["data"]["devices"]
                        if wanted <= {d["id"] for d in saved}:
                            return
                # No notification exists for the delayed save; look again shortly.
                await asyncio.sleep(0.25)


async def _body(response: aiohttp.ClientResponse) -> Any:
    if response.content_type == "application/json":
        return await response.json()
    return await response.text()


async def _next_payload(client: aiomqtt.Client, payload: bytes, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if message.payload == payload:
                return


def _slug(name: str) -> str:
    """homeassistant.util.slugify for plain ASCII names (what notify service names use)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")

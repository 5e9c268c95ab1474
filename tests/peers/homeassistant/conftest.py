"""One real Home Assistant per test session, on a mosquitto of its own.

Installed on first use by scripts/homeassistant (about a minute on a fresh machine, then
cached under .cache/homeassistant/), started with a fresh config directory, onboarded,
its MQTT integration pointed at a fresh ``tests.broker.Broker``, and a fake phone
registered whose notifications land in ``homeassistant.push``. A failed install or start
fails the tests; nothing here skips.

Tests that use these fixtures run in the session's event loop:
``pytestmark = pytest.mark.asyncio(loop_scope="session")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.broker import Broker
from tests.fake_llm import FakeLLM
from tests.peers.homeassistant.harness import HaUser, HomeAssistant, install
from tests.peers.homeassistant.lookout import (
    HA_INTEGRATIONS,
    INTEGRATION,
    LLM_PROBE,
    LOOKOUT_USERS,
    Lookout,
    Model,
    install_examples,
    loaded_entry,
    options_flow,
)
from tests.peers.llamacpp import build as llama_build


@pytest.fixture(scope="session")
def hass_executable() -> Path:
    return install()


@pytest.fixture(scope="session")
def ha_broker() -> Iterator[Broker]:
    """A mosquitto for Home Assistant alone (never the shared one on 1883)."""
    broker = Broker()
    broker.start()
    yield broker
    broker.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def homeassistant(
    hass_executable: Path, ha_broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HomeAssistant]:
    ha = HomeAssistant(
        hass_executable,
        tmp_path_factory.mktemp("homeassistant"),
        # The repository's custom integration (and a probe that uses its LLM API as an
        # agent does): custom integrations are found only at start.
        custom_components=(INTEGRATION, LLM_PROBE),
        integrations=HA_INTEGRATIONS,
    )
    try:
        await ha.start()
        await ha.onboard()
        await ha.setup_mqtt(ha_broker.host, ha_broker.port)
        await ha.register_phone("Test phone")
        yield ha
    finally:
        await ha.close()


# -- lookout next to Home Assistant, and the examples installed in it ---------------------


@pytest.fixture(scope="session")
def model() -> Model:
    return Model()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fake_llm(model: Model) -> AsyncIterator[FakeLLM]:
    async with FakeLLM(responder=model) as fake:
        yield fake


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def lookout_service(
    homeassistant: HomeAssistant,
    ha_broker: Broker,
    fake_llm: FakeLLM,
    model: Model,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Lookout]:
    service = Lookout(ha_broker, tmp_path_factory.mktemp("lookout"), fake_llm, model)
    try:
        await service.start(homeassistant)
        await install_examples(homeassistant)
        yield service
    finally:
        await service.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def lookout(lookout_service: Lookout, homeassistant: HomeAssistant, model: Model) -> Lookout:
    """lookout as the examples expect it (the default configuration, the instant model)."""
    model.reset()
    await lookout_service.ensure(homeassistant)
    return lookout_service


@pytest_asyncio.fixture(loop_scope="session")
async def lookout_integration(
    lookout_service: Lookout, homeassistant: HomeAssistant, model: Model
) -> dict[str, Any]:
    """The integration's config entry, loaded, with lookout running with LOOKOUT_USERS
    (the entry is added through the config flow if the session has none yet)."""
    model.reset()
    await lookout_service.ensure(homeassistant, users=LOOKOUT_USERS)
    return await loaded_entry(homeassistant)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def porch_person(homeassistant: HomeAssistant) -> HaUser:
    """A Home Assistant user who is not an admin, logged in with a websocket of their own."""
    return await homeassistant.add_user("Porch viewer")


@pytest_asyncio.fixture(loop_scope="session")
async def porch_viewer(
    porch_person: HaUser, lookout_integration: dict[str, Any], homeassistant: HomeAssistant
) -> HaUser:
    """That user, mapped in the integration's options to lookout's ``porch_viewer``."""
    entry_id = lookout_integration["entry_id"]
    diagnostics = await homeassistant.api("GET", f"/api/diagnostics/config_entry/{entry_id}")
    if diagnostics["data"]["entry"]["users"].get(porch_person.name) != "porch_viewer":
        answer = {"ha_user": porch_person.id, "lookout_user": "porch_viewer"}
        mapped = await options_flow(homeassistant, entry_id, "user_map", answer)
        assert mapped["type"] == "create_entry", mapped
    return porch_person


LOG_CHECK = "test_the_home_assistant_log_has_no_errors_or_warnings"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier's tests stay together, in file order, except that the files that need the
    llama.cpp server run last (on a fresh machine it is still being built when the tier
    starts; the others need not wait for it), and the log check after them all: it reads
    what every other test of the tier made Home Assistant do."""
    here = Path(__file__).parent
    _build_llama_server_first(items, here)
    tier = [n for n, i in enumerate(items) if here in Path(str(i.path)).parents]
    if not tier:
        return
    start, end = tier[0], tier[-1] + 1
    ours = items[start:end]  # contiguous: the tier is one folder
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in ours:
        by_file.setdefault(Path(str(item.path)), []).append(item)
    llama_files = {
        path
        for path, file_items in by_file.items()
        if all("llama_binary" in getattr(i, "fixturenames", ()) for i in file_items)
    }

    def rank(item: pytest.Item) -> int:
        if item.name == LOG_CHECK:
            return 2
        return 1 if Path(str(item.path)) in llama_files else 0

    items[start:end] = sorted(ours, key=rank)  # stable: file order within each rank


def _build_llama_server_first(items: list[pytest.Item], here: Path) -> None:
    """The llama.cpp server some tests of this tier use starts building now if it is
    missing (as in its own tier, see ``build.prepare``); a failed build fails them."""
    llama_build.prepare(items, here)

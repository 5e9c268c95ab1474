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

import pytest
import pytest_asyncio

from tests.broker import Broker
from tests.peers.homeassistant.harness import HomeAssistant, install


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
    ha = HomeAssistant(hass_executable, tmp_path_factory.mktemp("homeassistant"))
    try:
        await ha.start()
        await ha.onboard()
        await ha.setup_mqtt(ha_broker.host, ha_broker.port)
        await ha.register_phone("Test phone")
        yield ha
    finally:
        await ha.close()


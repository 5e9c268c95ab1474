"""lookout for Assist: talk to your cameras through lookout, over Home Assistant's MQTT.

One config entry per lookout (its MQTT topic prefix) gives:

- a conversation agent (``conversation.lookout``) that hands Assist's text to lookout's
  ``chat`` as the lookout user of the Home Assistant user who asks;
- an LLM API ("lookout") whose tools are the ones lookout retains on ``<prefix>/tools``,
  for any other agent, run with the caller's lookout rights.

Everything goes over the MQTT integration's connection: no second connection, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeassistant.components import mqtt
from homeassistant.const import Platform
from homeassistant.exceptions import ConfigEntryNotReady

from .client import LookoutClient
from .const import CONF_PREFIX, CONF_TIMEOUT, CONF_USER, CONF_USERS, DEFAULT_TIMEOUT, DEFAULT_USER
from .llm_api import async_register_api

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.core import HomeAssistant

PLATFORMS = [Platform.CONVERSATION]


@dataclass
class LookoutRuntime:
    """What a loaded entry holds: its client, and its options read as they are now."""

    entry: ConfigEntry[Any]
    client: LookoutClient

    @property
    def prefix(self) -> str:
        """The topic prefix of lookout (its ``mqtt.topic_prefix``)."""
        return str(self.entry.data[CONF_PREFIX])

    @property
    def default_user(self) -> str:
        """The lookout user of anyone not mapped."""
        return str(self.entry.options.get(CONF_USER, DEFAULT_USER))

    @property
    def timeout(self) -> float:
        """Seconds to wait for lookout's next reply."""
        return float(self.entry.options.get(CONF_TIMEOUT, DEFAULT_TIMEOUT))

    def lookout_user(self, ha_user_id: str | None) -> str:
        """The lookout user a Home Assistant user (None: no user, a satellite) asks as."""
        users: dict[str, str] = self.entry.options.get(CONF_USERS) or {}
        if ha_user_id is not None and ha_user_id in users:
            return users[ha_user_id]
        return self.default_user


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry[LookoutRuntime]) -> bool:
    """Follow lookout on MQTT and offer the agent and the tools."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady("Home Assistant's MQTT integration is not available")
    client = LookoutClient(hass, entry.data[CONF_PREFIX])
    await client.async_start()
    entry.async_on_unload(client.async_stop)
    runtime = LookoutRuntime(entry, client)
    entry.runtime_data = runtime
    entry.async_on_unload(async_register_api(hass, runtime))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry[LookoutRuntime]) -> bool:
    """Remove the agent; the client and the tools go with the entry's unload callbacks."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)

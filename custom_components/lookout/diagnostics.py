"""Diagnostics: the entry's settings, what the integration knows of lookout, its counters.

Nothing secret passes through this integration (the broker's credentials belong to the
MQTT integration and are never read here); Home Assistant user ids are replaced by the
users' names.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .const import CONF_USERS
from .conversation import CHAT_LOG, EXTERNAL_TOOLS, THINKING
from .llm_api import api_id_for

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.core import HomeAssistant

    from . import LookoutRuntime


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: ConfigEntry[LookoutRuntime]
) -> dict[str, Any]:
    """What a bug report about this lookout entry needs."""
    runtime = entry.runtime_data
    client = runtime.client
    names = {u.id: u.name for u in await hass.auth.async_get_users()}
    users = {
        names.get(ha_user, "(a removed user)"): lookout_user
        for ha_user, lookout_user in (entry.options.get(CONF_USERS) or {}).items()
    }
    return {
        "entry": {
            "title": entry.title,
            "prefix": runtime.prefix,
            "default_lookout_user": runtime.default_user,
            "timeout_s": runtime.timeout,
            "users": users,
        },
        "lookout": {
            "status": client.status,
            "tools": [t["function"]["name"] for t in client.tools],
            "tools_updated_at": client.tools_updated_at,
        },
        "llm_api": api_id_for(runtime.prefix),
        "home_assistant": {
            "chat_log_streaming": CHAT_LOG,
            "external_tool_calls": EXTERNAL_TOOLS,
            "thinking_content": THINKING,
        },
        "client": {"reply_tag": client.tag, **dataclasses.asdict(client.stats)},
    }

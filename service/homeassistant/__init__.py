"""Home Assistant: lookout as one MQTT-discovered device, kept up to date.

:class:`HomeAssistantBridge` announces the device, turns the text/notify/button entities
into lookout requests and mirrors answers, watches and alerts into entity states.
"""

from __future__ import annotations

from service.homeassistant.bridge import HomeAssistantBridge
from service.homeassistant.payloads import parse_jobs

__all__ = [
    "HomeAssistantBridge",
    "parse_jobs",
]

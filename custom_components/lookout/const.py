"""Constants of the lookout integration."""

from __future__ import annotations

import re
from typing import Final

DOMAIN: Final = "lookout"

CONF_PREFIX: Final = "prefix"
"""lookout's ``mqtt.topic_prefix`` (entry data: it names the lookout, so it never changes)."""
CONF_USER: Final = "lookout_user"
"""The lookout user for Home Assistant users that are not mapped (and for voice
satellites, whose requests carry no user)."""
CONF_TIMEOUT: Final = "timeout"
"""Seconds to wait for lookout's next reply before Assist is told there is no answer."""
CONF_USERS: Final = "users"
"""Home Assistant user id -> lookout user."""

DEFAULT_PREFIX: Final = "lookout"
DEFAULT_USER: Final = "homeassistant"
DEFAULT_TIMEOUT: Final = 120
MIN_TIMEOUT: Final = 5
MAX_TIMEOUT: Final = 3600

HEALTH_TIMEOUT: Final = 10.0
"""How long the config flow waits for lookout's health reply."""
PROBE_TIMEOUT: Final = 10.0
"""How long a new reply subscription may take to deliver Home Assistant's own probe."""
CANCEL_TIMEOUT: Final = 5.0

NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""lookout's names: callers, request ids and conversation ids."""
RESERVED_USERS: Final = frozenset({"camera", "tools", "status"})
"""Second topic levels lookout uses itself, so no caller may be called so."""

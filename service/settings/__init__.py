"""Configuration: the YAML file and environment overrides, validated by pydantic models.

The bottom layer with :mod:`service.log`: every other part may read its section from
here, and nothing here imports another part of lookout. The names that become topic
levels (callers, cameras, ids) are defined here too, because the configuration and the
topic map must agree on them.
"""

from __future__ import annotations

from service.settings.cluster import ClusterSettings, resolve_worker_name
from service.settings.homeassistant import HomeAssistantSettings
from service.settings.load import CONFIG_ENV, ENV_PREFIX, ConfigError, load_settings
from service.settings.names import (
    NAME_PATTERN,
    NAME_RE,
    RESERVED_USERS,
    ZONE_NAME_MAX,
    is_zone_name,
)
from service.settings.sections import (
    AuthSettings,
    CameraSettings,
    ChatSettings,
    FrigateSettings,
    LimitsSettings,
    LlmSettings,
    LogSettings,
    MqttSettings,
    ProviderSettings,
    Settings,
    StoreSettings,
    UserSettings,
)
from service.settings.watch import WatchSettings

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "NAME_PATTERN",
    "NAME_RE",
    "RESERVED_USERS",
    "ZONE_NAME_MAX",
    "AuthSettings",
    "CameraSettings",
    "ChatSettings",
    "ClusterSettings",
    "ConfigError",
    "FrigateSettings",
    "HomeAssistantSettings",
    "LimitsSettings",
    "LlmSettings",
    "LogSettings",
    "MqttSettings",
    "ProviderSettings",
    "Settings",
    "StoreSettings",
    "UserSettings",
    "WatchSettings",
    "is_zone_name",
    "load_settings",
    "resolve_worker_name",
]

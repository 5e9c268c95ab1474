"""What Home Assistant accepts in a device-based MQTT discovery document.

A checker written from Home Assistant's MQTT documentation (device-based discovery, and
the pages of the sensor, binary_sensor, text, notify, event, image and button platforms):
the keys each platform knows (a typo would be dropped silently by HA's schemas, so an
unknown key is an error here), the required ones, and the value rules HA enforces.
``problems()`` returns every violation so a failing test shows them all at once.
"""

from __future__ import annotations

import re
from typing import Any

ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
DISCOVERY_TOPIC_RE = re.compile(r"^(?P<prefix>.+)/device/(?P<object_id>[a-zA-Z0-9_-]+)/config$")

COMMON = {
    "p", "name", "unique_id", "default_entity_id", "object_id", "availability",
    "availability_mode", "availability_template", "availability_topic", "payload_available",
    "payload_not_available", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "icon", "json_attributes_template", "json_attributes_topic", "qos",
}  # fmt: skip
PLATFORMS: dict[str, tuple[set[str], set[str]]] = {
    # platform: (required, optional beyond COMMON)
    "sensor": ({"state_topic"}, {"device_class", "expire_after", "force_update",
                "last_reset_value_template", "options", "suggested_display_precision",
                "state_class", "unit_of_measurement", "value_template"}),
    "binary_sensor": ({"state_topic"}, {"device_class", "expire_after", "force_update",
                      "off_delay", "payload_off", "payload_on", "value_template"}),
    "text": ({"command_topic"}, {"command_template", "max", "min", "mode", "pattern", "retain",
             "state_topic", "value_template"}),
    "notify": ({"command_topic"}, {"command_template", "retain"}),
    "event": ({"state_topic", "event_types"}, {"device_class", "value_template"}),
    "image": (set(), {"image_topic", "url_topic", "content_type", "image_encoding",
              "url_template"}),
    "button": ({"command_topic"}, {"command_template", "device_class", "payload_press",
               "retain"}),
}  # fmt: skip
DEVICE_KEYS = {
    "identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version",
    "hw_version", "serial_number", "suggested_area", "configuration_url", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
SENSOR_STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}


def _publish_topic_ok(topic: Any) -> bool:
    return isinstance(topic, str) and len(topic) > 0 and not set(topic) & {"+", "#", "\0"}


def _filter_ok(topic: Any) -> bool:
    if not isinstance(topic, str) or not topic or "\0" in topic:
        return False
    levels = topic.split("/")
    return (
        all(level in ("+", "#") or not set(level) & {"+", "#"} for level in levels)
        and "#" not in levels[:-1]
    )


def problems(topic: str, document: Any) -> list[str]:
    """Every reason Home Assistant would reject or misread this discovery message."""
    out: list[str] = []
    if not DISCOVERY_TOPIC_RE.match(topic):
        out.append(f"topic {topic!r} is not <prefix>/device/<object_id>/config")
    if not isinstance(document, dict):
        return [*out, "the payload is not a JSON object"]
    for key in set(document) - {"dev", "o", "cmps", "device", "origin", "components"}:
        if key not in COMMON | {"state_topic", "command_topic"}:
            out.append(f"unknown top-level key {key!r}")
    out += _device_and_origin_problems(document)
    components = document.get("cmps", document.get("components"))
    if not isinstance(components, dict) or not components:
        return [*out, "no components ('cmps')"]
    seen: dict[str, str] = {}
    for key, config in components.items():
        where = f"cmps.{key}"
        if not ID_RE.match(key):
            out.append(f"{where}: component id has characters outside [a-zA-Z0-9_-]")
        out += [f"{where}: {p}" for p in _component_problems(config)]
        uid = config.get("unique_id") if isinstance(config, dict) else None
        if isinstance(uid, str):
            if uid in seen:
                out.append(f"{where}: unique_id {uid!r} also used by {seen[uid]}")
            seen[uid] = where
    return out


def _device_and_origin_problems(document: dict[str, Any]) -> list[str]:
    out: list[str] = []
    device = document.get("dev", document.get("device"))
    if not isinstance(device, dict):
        out.append("no device block ('dev')")
    else:
        out += [f"dev: unknown key {k!r}" for k in set(device) - DEVICE_KEYS]
        ids = device.get("identifiers")
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)):
            out.append("dev.identifiers must be a non-empty list of strings")
        if not isinstance(device.get("name"), str) or not device["name"]:
            out.append("dev.name is required")
    origin = document.get("o", document.get("origin"))
    if not isinstance(origin, dict) or not isinstance(origin.get("name"), str):
        out.append("no origin block ('o') with a name")
    else:
        out += [f"o: unknown key {k!r}" for k in set(origin) - ORIGIN_KEYS]
    return out


def _component_problems(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return ["not an object"]
    platform = config.get("p")
    if platform not in PLATFORMS:
        return [f"platform {platform!r} is not one this checker knows"]
    required, optional = PLATFORMS[platform]
    out = [f"missing required {k!r}" for k in sorted(required - set(config))]
    out += [
        f"unknown key {k!r} for {platform}"
        for k in sorted(set(config) - COMMON - required - optional)
    ]
    if not isinstance(config.get("unique_id"), str) or not config["unique_id"]:
        out.append("device-based discovery needs a unique_id on every entity")
    if "default_entity_id" in config and not str(config["default_entity_id"]).startswith(
        f"{platform}."
    ):
        out.append("default_entity_id must start with the platform")
    for key, value in config.items():
        if key.endswith("_topic"):
            ok = _publish_topic_ok(value) if key == "command_topic" else _filter_ok(value)
            if not ok:
                out.append(f"{key} {value!r} is not a valid topic")
    if "availability" in config and "availability_topic" in config:
        out.append("availability and availability_topic may not be used together")
    for entry in config.get("availability") or []:
        if not isinstance(entry, dict) or not _filter_ok(entry.get("topic")):
            out.append(f"availability entry {entry!r} has no valid topic")
    if config.get("qos", 0) not in (0, 1, 2):
        out.append("qos must be 0, 1 or 2")
    if config.get("entity_category", "diagnostic") not in ENTITY_CATEGORIES:
        out.append(f"entity_category {config['entity_category']!r}")
    out += _platform_rules(platform, config)
    return out


def _platform_rules(platform: str, config: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if platform == "text":
        low, high = config.get("min", 0), config.get("max", 255)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= 255):
            out.append("text needs 0 <= min <= max <= 255")
        if config.get("mode", "text") not in ("text", "password"):
            out.append("text mode must be text or password")
    elif platform == "binary_sensor":
        if config.get("payload_on", "ON") == config.get("payload_off", "OFF"):
            out.append("payload_on equals payload_off")
    elif platform == "event":
        types = config.get("event_types")
        if not (isinstance(types, list) and types and all(isinstance(t, str) and t for t in types)):
            out.append("event_types must be a non-empty list of strings")
    elif platform == "image":
        if ("image_topic" in config) == ("url_topic" in config):
            out.append("an image needs exactly one of image_topic and url_topic")
        if not str(config.get("content_type", "image/jpeg")).startswith("image/"):
            out.append("content_type must be an image type")
    elif platform == "sensor" and config.get("state_class", "total") not in SENSOR_STATE_CLASSES:
        out.append(f"state_class {config['state_class']!r}")
    return out


def state_ok(state: str) -> bool:
    """Whether Home Assistant stores this as an entity state (at most 255 characters)."""
    return len(state) <= 255

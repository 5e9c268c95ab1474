"""The config flow and the options flow.

Set-up asks for the topic prefix, the lookout user and the timeout, and checks them with
lookout's ``health``; the options change the default lookout user and the timeout, and
map Home Assistant users to lookout users.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigFlowResult, OptionsFlow
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import selector

from .client import LookoutClient, LookoutError
from .const import (
    CONF_PREFIX,
    CONF_TIMEOUT,
    CONF_USER,
    CONF_USERS,
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    DEFAULT_USER,
    DOMAIN,
    HEALTH_TIMEOUT,
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    NAME_RE,
    RESERVED_USERS,
)

CONF_HA_USER = "ha_user"

TIMEOUT_SELECTOR = selector.NumberSelector(
    selector.NumberSelectorConfig(
        min=MIN_TIMEOUT,
        max=MAX_TIMEOUT,
        step=1,
        mode=selector.NumberSelectorMode.BOX,
        unit_of_measurement="s",
    )
)
TEXT_SELECTOR = selector.TextSelector()


def _user_and_timeout(defaults: Mapping[str, Any]) -> dict[Any, Any]:
    """The fields that set-up and the options share: the lookout user and the timeout."""
    return {
        vol.Required(CONF_USER, default=defaults.get(CONF_USER, DEFAULT_USER)): TEXT_SELECTOR,
        vol.Required(
            CONF_TIMEOUT, default=defaults.get(CONF_TIMEOUT, DEFAULT_TIMEOUT)
        ): TIMEOUT_SELECTOR,
    }


def valid_prefix(prefix: str) -> bool:
    """A topic prefix lookout could have: levels without wildcards, not a system topic."""
    return (
        0 < len(prefix) <= 200
        and not prefix.startswith(("$", "/"))
        and not prefix.endswith("/")
        and "//" not in prefix
        and not any(c in prefix for c in "+#\x00")
    )


def valid_user(user: str) -> bool:
    """A caller name lookout accepts (``A-Za-z0-9_-``, 1-64, not a reserved level)."""
    return bool(NAME_RE.fullmatch(user)) and user not in RESERVED_USERS


async def async_check_lookout(hass: HomeAssistant, prefix: str, user: str) -> dict[str, Any]:
    """The ``health`` reply of lookout, asked as ``user``; LookoutError if there is none."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise LookoutError("mqtt", "Home Assistant's MQTT integration is not set up")
    client = LookoutClient(hass, prefix)
    # Its status too: a lookout that said "offline" is reported at once.
    await client.async_start()
    try:
        return await client.async_call(user, "health", {}, HEALTH_TIMEOUT)
    finally:
        client.async_stop()


def _error_key(error: LookoutError) -> str:
    if error.code == "mqtt":
        return "mqtt_unavailable"
    if error.code in ("no_answer", "offline"):
        return "cannot_connect"
    return "refused"


def _check_fields(data: dict[str, Any], errors: dict[str, str]) -> None:
    if CONF_PREFIX in data and not valid_prefix(data[CONF_PREFIX]):
        errors[CONF_PREFIX] = "invalid_prefix"
    if not valid_user(data[CONF_USER]):
        errors[CONF_USER] = "invalid_user"


class LookoutConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a lookout: where it is on the broker, and who Home Assistant asks as."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the prefix, the lookout user and the timeout; check lookout's health."""
        errors: dict[str, str] = {}
        placeholders = {"message": ""}
        if user_input is not None:
            prefix = user_input[CONF_PREFIX].strip()
            user = user_input[CONF_USER].strip()
            data = {**user_input, CONF_PREFIX: prefix, CONF_USER: user}
            _check_fields(data, errors)
            if not errors:
                await self.async_set_unique_id(prefix)
                self._abort_if_unique_id_configured()
                try:
                    await async_check_lookout(self.hass, prefix, user)
                except LookoutError as err:
                    errors["base"] = _error_key(err)
                    placeholders["message"] = err.message
                else:
                    return self.async_create_entry(
                        title="lookout" if prefix == DEFAULT_PREFIX else f"lookout ({prefix})",
                        data={CONF_PREFIX: prefix},
                        options={
                            CONF_USER: user,
                            CONF_TIMEOUT: int(user_input[CONF_TIMEOUT]),
                            CONF_USERS: {},
                        },
                    )
        defaults = user_input or {}
        schema = vol.Schema(
            {
                vol.Required(
                    CONF_PREFIX, default=defaults.get(CONF_PREFIX, DEFAULT_PREFIX)
                ): TEXT_SELECTOR,
                **_user_and_timeout(defaults),
            }
        )
        return self.async_show_form(
            step_id="user", data_schema=schema, errors=errors, description_placeholders=placeholders
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry[Any]) -> OptionsFlow:
        """The options: settings, and the user mapping."""
        return LookoutOptionsFlow()


class LookoutOptionsFlow(OptionsFlow):
    """Change the default lookout user and the timeout, or map a Home Assistant user."""

    def _entry(self) -> ConfigEntry[Any]:
        # OptionsFlow.config_entry is only a property from 2024.12 on; the handler is the
        # entry id in every release.
        entry = self.hass.config_entries.async_get_entry(self.handler)
        if entry is None:
            raise LookoutError("not_found", "the lookout entry is gone")
        return entry

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Which options to change."""
        return self.async_show_menu(step_id="init", menu_options=["settings", "user_map"])

    async def async_step_settings(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The default lookout user and the timeout (checked with lookout's health)."""
        entry = self._entry()
        options = dict(entry.options)
        errors: dict[str, str] = {}
        placeholders = {"message": ""}
        if user_input is not None:
            user = user_input[CONF_USER].strip()
            _check_fields({CONF_USER: user}, errors)
            if not errors:
                try:
                    await async_check_lookout(self.hass, entry.data[CONF_PREFIX], user)
                except LookoutError as err:
                    errors["base"] = _error_key(err)
                    placeholders["message"] = err.message
                else:
                    options.update({CONF_USER: user, CONF_TIMEOUT: int(user_input[CONF_TIMEOUT])})
                    return self.async_create_entry(data=options)
        defaults = user_input or options
        schema = vol.Schema(_user_and_timeout(defaults))
        return self.async_show_form(
            step_id="settings",
            data_schema=schema,
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_user_map(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Map one Home Assistant user to a lookout user (empty: back to the default)."""
        entry = self._entry()
        options = dict(entry.options)
        mapping: dict[str, str] = dict(options.get(CONF_USERS) or {})
        users = [
            u
            for u in await self.hass.auth.async_get_users()
            if not u.system_generated and u.is_active
        ]
        names = {u.id: u.name or u.id for u in users}
        errors: dict[str, str] = {}
        placeholders = {"message": ""}
        if user_input is not None:
            ha_user = user_input[CONF_HA_USER]
            lookout_user = (user_input.get(CONF_USER) or "").strip()
            if ha_user not in names:
                errors[CONF_HA_USER] = "unknown_user"
            elif lookout_user and not valid_user(lookout_user):
                errors[CONF_USER] = "invalid_user"
            else:
                try:
                    if lookout_user:
                        await async_check_lookout(self.hass, entry.data[CONF_PREFIX], lookout_user)
                except LookoutError as err:
                    errors["base"] = _error_key(err)
                    placeholders["message"] = err.message
                else:
                    if lookout_user:
                        mapping[ha_user] = lookout_user
                    else:
                        mapping.pop(ha_user, None)
                    options[CONF_USERS] = mapping
                    return self.async_create_entry(data=options)
        current = (
            ", ".join(f"{names.get(k, k)} → {v}" for k, v in sorted(mapping.items())) or "none"
        )
        schema = vol.Schema(
            {
                vol.Required(CONF_HA_USER): selector.SelectSelector(
                    selector.SelectSelectorConfig(
                        options=[
                            selector.SelectOptionDict(value=uid, label=name)
                            for uid, name in sorted(names.items(), key=lambda i: i[1])
                        ],
                        mode=selector.SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Optional(CONF_USER): TEXT_SELECTOR,
            }
        )
        return self.async_show_form(
            step_id="user_map",
            data_schema=schema,
            errors=errors,
            description_placeholders={
                **placeholders,
                "mapping": current,
                "default": str(options.get(CONF_USER, DEFAULT_USER)),
            },
        )

"""A test-only Home Assistant integration that uses LLM APIs as an agent does.

Conversation agents (OpenAI, Ollama, Google …) get an API instance with
``llm.async_get_api(hass, api_id, llm_context)``, whose context carries the user who is
talking, turn each tool's ``parameters`` into JSON schema with voluptuous-openapi (with
the instance's ``custom_serializer``), and run a call with ``async_call_tool``, turning a
``HomeAssistantError`` into an error the model reads. These websocket commands do the
same for the user of the websocket connection, so a test can see what any agent sees:

- ``lookout_llm_probe/apis``: the registered APIs, ``[{"id", "name"}]``;
- ``lookout_llm_probe/tools`` (``api``): ``{"prompt", "tools": [{"name", "description",
  "parameters"}]}``;
- ``lookout_llm_probe/call`` (``api``, ``tool_name``, ``tool_args``): ``{"result": …}``,
  or ``{"error": <exception type>, "error_text": …}`` as the chat log writes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import voluptuous as vol
from homeassistant.components import websocket_api
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from voluptuous_openapi import convert

DOMAIN = "lookout_llm_probe"
CONFIG_SCHEMA = vol.Schema({DOMAIN: vol.Schema({})}, extra=vol.ALLOW_EXTRA)


async def async_setup(hass: HomeAssistant, config: dict[str, Any]) -> bool:
    websocket_api.async_register_command(hass, ws_apis)
    websocket_api.async_register_command(hass, ws_tools)
    websocket_api.async_register_command(hass, ws_call)
    return True


def _context(connection: websocket_api.ActiveConnection) -> llm.LLMContext:
    fields = {f.name for f in dataclasses.fields(llm.LLMContext)}
    values = {
        "platform": DOMAIN,
        "context": Context(user_id=connection.user.id),
        "user_prompt": None,
        "language": "en",
        "assistant": "conversation",
        "device_id": None,
    }
    return llm.LLMContext(**{k: v for k, v in values.items() if k in fields})


@websocket_api.websocket_command({vol.Required("type"): f"{DOMAIN}/apis"})
@websocket_api.async_response
async def ws_apis(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, msg: dict[str, Any]
) -> None:
    apis = [{"id": api.id, "name": api.name} for api in llm.async_get_apis(hass)]
    connection.send_result(msg["id"], apis)


@websocket_api.websocket_command(
    {vol.Required("type"): f"{DOMAIN}/tools", vol.Required("api"): str}
)
@websocket_api.async_response
async def ws_tools(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, msg: dict[str, Any]
) -> None:
    try:
        instance = await llm.async_get_api(hass, msg["api"], _context(connection))
    except HomeAssistantError as err:
        connection.send_error(msg["id"], "api_error", str(err))
        return
    tools = [
        {
            "name": tool.name,
            "description": tool.description,
            "parameters": convert(tool.parameters, custom_serializer=instance.custom_serializer),
        }
        for tool in instance.tools
    ]
    connection.send_result(msg["id"], {"prompt": instance.api_prompt, "tools": tools})


@websocket_api.websocket_command(
    {
        vol.Required("type"): f"{DOMAIN}/call",
        vol.Required("api"): str,
        vol.Required("tool_name"): str,
        vol.Optional("tool_args", default={}): dict,
    }
)
@websocket_api.async_response
async def ws_call(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, msg: dict[str, Any]
) -> None:
    try:
        instance = await llm.async_get_api(hass, msg["api"], _context(connection))
        result = await instance.async_call_tool(
            llm.ToolInput(tool_name=msg["tool_name"], tool_args=msg["tool_args"])
        )
    except (HomeAssistantError, vol.Invalid) as err:
        connection.send_result(msg["id"], {"error": type(err).__name__, "error_text": str(err)})
        return
    connection.send_result(msg["id"], {"result": result})

"""lookout's tools as Home Assistant's LLM API "lookout", for any conversation agent.

The probe integration (``llm_probe/``) uses the API exactly as agents do
(``llm.async_get_api`` with the talking user in the context, voluptuous-openapi for the
tool schemas, ``async_call_tool``), as the user of the websocket it is called on. The
tools are the ones lookout retains on ``lookout/tools`` and follow that message; a call
runs with the rights of the caller's lookout user.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.peers.homeassistant.harness import HaUser, HomeAssistant
from tests.peers.homeassistant.lookout import (
    LOOKOUT_USERS,
    Lookout,
    frigate_objects,
    stored,
)
from tests.peers.homeassistant.ws import HaWebSocket

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

API = "lookout"
PROBE = "lookout_llm_probe"
OBJECTS = [("porch", "person"), ("garage", "person"), ("garage", "bicycle")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seen(lookout_service: Lookout, homeassistant: HomeAssistant) -> list[str]:
    """People on the porch and in the garage, and a bicycle in the garage."""
    await lookout_service.ensure(homeassistant, users=LOOKOUT_USERS)
    ids = await frigate_objects(lookout_service, OBJECTS)
    await stored(lookout_service, ids)
    return ids


async def tools_of(ws: HaWebSocket) -> dict[str, Any]:
    return await ws.command({"type": f"{PROBE}/tools", "api": API})  # type: ignore[no-any-return]


async def call(ws: HaWebSocket, tool: str, **args: Any) -> dict[str, Any]:
    command = {"type": f"{PROBE}/call", "api": API, "tool_name": tool, "tool_args": args}
    return await ws.command(command, timeout=60)  # type: ignore[no-any-return]


def simple(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI parameters schema reduced to what a voluptuous schema can carry: the
    properties' types (a nullable ``anyOf`` as its type), enums, bounds, descriptions and
    ``required``."""
    properties = {}
    for name, spec in schema.get("properties", {}).items():
        options = [s for s in spec.get("anyOf", [spec]) if s.get("type") != "null"]
        (kind,) = options
        prop = {
            k: v for k, v in kind.items() if k in ("type", "enum", "items", "minimum", "maximum")
        }
        if "description" in spec:
            prop["description"] = spec["description"]
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": sorted(schema["required"])}


async def test_agents_find_the_lookout_api_with_lookout_s_tools(
    homeassistant: HomeAssistant, lookout_integration: dict[str, Any], lookout_service: Lookout
) -> None:
    apis = await homeassistant.ws.command({"type": f"{PROBE}/apis"})
    assert {"id": API, "name": "lookout"} in apis, apis
    offered = await tools_of(homeassistant.ws)
    retained = (await lookout_service.retained("lookout/tools"))["tools"]
    assert [t["name"] for t in offered["tools"]] == [t["function"]["name"] for t in retained]
    for tool, definition in zip(offered["tools"], retained, strict=True):
        function = definition["function"]
        assert tool["description"] == function["description"]
        params = tool["parameters"]
        assert {**params, "required": sorted(params.get("required", []))} == simple(
            function["parameters"]
        ), tool["name"]
    assert "cameras" in offered["prompt"]


async def test_a_tool_call_returns_lookout_s_result_with_the_caller_s_rights(
    homeassistant: HomeAssistant, porch_viewer: HaUser, lookout_service: Lookout, seen: list[str]
) -> None:
    # The owner asks as lookout's default user (an admin): everything.
    everything = await call(homeassistant.ws, "search_objects", label="person", limit=100)
    direct = await lookout_service.request(
        "tool", {"tool_name": "search_objects", "arguments": {"label": "person", "limit": 100}}
    )
    assert everything == {"result": direct["result"]}
    cameras = {o["camera"] for o in everything["result"]["objects"] if o["id"] in seen}
    assert cameras == {"porch", "garage"}

    # The porch viewer asks as lookout's porch_viewer: the porch, and nothing of the garage.
    porch = await call(porch_viewer.ws, "search_objects", limit=100)
    assert porch["result"]["objects"], porch
    assert {o["camera"] for o in porch["result"]["objects"]} == {"porch"}
    assert set(seen) & {o["id"] for o in porch["result"]["objects"]} == {seen[0]}
    garage = await call(porch_viewer.ws, "search_objects", camera="garage")
    assert garage["error"] == "HomeAssistantError", garage
    assert re.search(r"camera 'garage' not found", garage["error_text"]), garage
    live = await call(porch_viewer.ws, "get_live_context", camera="garage")
    assert live["error"] == "HomeAssistantError" and "garage" in live["error_text"], live
    admin_only = await call(
        porch_viewer.ws, "set_camera_state", camera="porch", feature="detect", value="OFF"
    )
    assert admin_only["error"] == "HomeAssistantError", admin_only
    assert "does not allow" in admin_only["error_text"] or "admin" in admin_only["error_text"]


@pytest_asyncio.fixture(loop_scope="session")
async def original_tools(
    lookout_service: Lookout, lookout_integration: dict[str, Any], homeassistant: HomeAssistant
) -> AsyncIterator[dict[str, Any]]:
    """lookout's retained tool list; put back (as lookout published it) after the test."""
    original = await lookout_service.retained("lookout/tools")
    yield original
    await lookout_service.publish("lookout/tools", original, retain=True)
    await homeassistant.mqtt_barrier()


async def test_the_tools_follow_lookout_s_retained_list(
    homeassistant: HomeAssistant, lookout_service: Lookout, original_tools: dict[str, Any]
) -> None:
    fewer = [t for t in original_tools["tools"] if t["function"]["name"] != "get_recap"]
    extra = {
        "type": "function",
        "function": {
            "name": "count_parcels",
            "description": "How many parcels are on the porch.",
            "parameters": {
                "type": "object",
                "properties": {"hours": {"type": "integer", "minimum": 1, "maximum": 48}},
                "required": [],
            },
        },
    }
    await lookout_service.publish("lookout/tools", {"tools": [*fewer, extra]}, retain=True)
    # Home Assistant handles the messages of its one connection in order: once the
    # barrier's message is through, so is the tool list.
    await homeassistant.mqtt_barrier()
    offered = await tools_of(homeassistant.ws)
    names = [t["name"] for t in offered["tools"]]
    assert names == [t["function"]["name"] for t in fewer] + ["count_parcels"]
    (parcels,) = [t for t in offered["tools"] if t["name"] == "count_parcels"]
    assert parcels["parameters"]["properties"]["hours"] == {
        "type": "integer", "minimum": 1, "maximum": 48
    }  # fmt: skip
    # A tool lookout does not know (any more) is lookout's not_found, in words.
    gone = await call(homeassistant.ws, "count_parcels", hours=2)
    assert gone["error"] == "HomeAssistantError" and "count_parcels" in gone["error_text"], gone


async def test_home_assistant_logged_nothing_from_the_integration(
    homeassistant: HomeAssistant,
) -> None:
    """Everything the integration's tests made it do (the tier's last test checks the
    whole log again, with every other test's share)."""
    await homeassistant.mqtt_barrier()
    ours = [
        text
        for level, text in homeassistant.log_records()
        if level in {"WARNING", "ERROR", "CRITICAL"}
        and ("custom_components.lookout" in text or "custom_components/lookout" in text)
    ]
    assert ours == []

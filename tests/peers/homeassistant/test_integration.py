"""The custom integration (``custom_components/lookout``) in the real Home Assistant: it
loads, its config flow completes through Home Assistant's REST API after checking the
real lookout's health, its options change who asks as whom, and its diagnostics say what
it knows without secrets; its manifest and translations pass hassfest's checks."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import (
    AGENT,
    DOMAIN,
    INTEGRATION,
    Lookout,
    add_integration,
    integration_entries,
    options_flow,
)

HASSFEST_RULES = Path(__file__).parent / "hassfest_rules.py"

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]


async def remove_entries(ha: HomeAssistant) -> None:
    for entry in await integration_entries(ha):
        await ha.api("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")


async def test_the_config_flow_checks_lookout_then_adds_the_agent(
    homeassistant: HomeAssistant, lookout_integration: dict[str, Any], lookout_service: Lookout
) -> None:
    ha = homeassistant
    await remove_entries(ha)  # the fixture's entry: this test makes its own
    assert await ha.get_state(AGENT) is None

    bad = await add_integration(ha, prefix="look/+/out", lookout_user="tools")
    assert bad["type"] == "form"
    assert bad["errors"] == {"prefix": "invalid_prefix", "lookout_user": "invalid_user"}

    overrides = lookout_service.config or {}
    await lookout_service.stop(ha)  # lookout's retained status says offline: told at once
    try:
        down = await add_integration(ha, bad, prefix="lookout", lookout_user="homeassistant")
        assert down["type"] == "form" and down["errors"] == {"base": "cannot_connect"}, down
    finally:
        await lookout_service.start(ha, **overrides)

    # The same form again, as a person would press Submit once lookout is back.
    created = await add_integration(ha, down, timeout=30)
    assert created["type"] == "create_entry", created
    assert created["title"] == "lookout"
    await ha.mqtt_barrier()  # the entry's subscriptions are through
    (entry,) = await integration_entries(ha)
    assert entry["state"] == "loaded"
    options = await ha.ws.command(
        {"type": "config_entries/get_single", "entry_id": entry["entry_id"]}
    )
    assert options["config_entry"]["title"] == "lookout"
    state = await ha.get_state(AGENT)
    assert state is not None and state["state"] != "unavailable", state

    again = await add_integration(ha)
    assert again["type"] == "abort" and again["reason"] == "already_configured", again


async def test_options_set_the_default_user_and_the_timeout(
    homeassistant: HomeAssistant, lookout_integration: dict[str, Any]
) -> None:
    entry_id = lookout_integration["entry_id"]
    refused = await options_flow(
        homeassistant, entry_id, "settings", {"lookout_user": "status", "timeout": 60}
    )
    assert refused["type"] == "form" and refused["errors"] == {"lookout_user": "invalid_user"}
    done = await options_flow(
        homeassistant, entry_id, "settings", {"lookout_user": "homeassistant", "timeout": 45}
    )
    assert done["type"] == "create_entry", done
    diagnostics = await entry_diagnostics(homeassistant, entry_id)
    assert diagnostics["entry"]["timeout_s"] == 45
    assert diagnostics["entry"]["default_lookout_user"] == "homeassistant"
    await options_flow(
        homeassistant, entry_id, "settings", {"lookout_user": "homeassistant", "timeout": 120}
    )


async def entry_diagnostics(ha: HomeAssistant, entry_id: str) -> dict[str, Any]:
    document = await ha.api("GET", f"/api/diagnostics/config_entry/{entry_id}")
    assert document["integration_manifest"]["domain"] == DOMAIN
    return document["data"]  # type: ignore[no-any-return]


async def test_diagnostics_say_what_the_integration_knows_and_no_secret(
    homeassistant: HomeAssistant, lookout_integration: dict[str, Any], lookout_service: Lookout
) -> None:
    entry_id = lookout_integration["entry_id"]
    data = await entry_diagnostics(homeassistant, entry_id)
    assert data["entry"]["prefix"] == "lookout"
    assert data["lookout"]["status"] == "online"
    retained = await lookout_service.retained("lookout/tools")
    assert data["lookout"]["tools"] == [t["function"]["name"] for t in retained["tools"]]
    assert data["llm_api"] == "lookout"
    text = json.dumps(data)
    assert homeassistant.token is not None and homeassistant.token not in text
    assert not re.search(r"password|token|secret", text, re.IGNORECASE), text


async def test_manifest_and_translations_pass_hassfest_s_checks(
    homeassistant: HomeAssistant,
) -> None:
    """hassfest's checks of a custom integration (``hassfest_rules.py``, with the
    installed Home Assistant's validators: hassfest itself is not installable here)."""
    python = homeassistant.hass.parent / "python"
    checked = subprocess.run(
        [str(python), str(HASSFEST_RULES), str(INTEGRATION)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    manifest = json.loads((INTEGRATION / "manifest.json").read_text())
    assert manifest["config_flow"] is True and manifest["requirements"] == []
    assert {"conversation", "mqtt"} <= set(manifest["dependencies"])
    # translations/en.json is what a custom integration ships; strings.json (the source
    # core integrations build it from) says the same.
    strings = json.loads((INTEGRATION / "strings.json").read_text())
    assert json.loads((INTEGRATION / "translations" / "en.json").read_text()) == strings
    # Every step, error, abort and menu option the flows use has its text.
    flow = (INTEGRATION / "config_flow.py").read_text()
    for step in re.findall(r'step_id="(\w+)"', flow):
        assert step in strings["config" if step == "user" else "options"]["step"], step
    errors = set(re.findall(r'errors\[[^]]+\] = "(\w+)"', flow))
    errors |= set(re.findall(r'return "(\w+)"', flow))  # _error_key
    for error in errors:
        assert error in strings["config"]["error"] or error in strings["options"]["error"], error
    assert "already_configured" in strings["config"]["abort"]
    for menu in re.findall(r"menu_options=\[([^]]*)\]", flow):
        for option in re.findall(r'"(\w+)"', menu):
            assert option in strings["options"]["step"]["init"]["menu_options"], option
    hacs = json.loads((INTEGRATION.parents[1] / "hacs.json").read_text())
    assert hacs["name"] == manifest["name"] and hacs["homeassistant"] == "2024.11.0"


async def test_home_assistant_serves_the_translations_to_its_frontend(
    homeassistant: HomeAssistant, lookout_integration: dict[str, Any]
) -> None:
    strings = json.loads((INTEGRATION / "strings.json").read_text())
    for category in ("config", "options"):
        served = await homeassistant.ws.command(
            {"type": "frontend/get_translations", "language": "en", "category": category,
             "integration": [DOMAIN]}
        )  # fmt: skip
        resources = served["resources"]
        expected = {
            f"component.{DOMAIN}.{category}.{key}": value
            for key, value in _flat(strings[category]).items()
        }
        assert {k: resources.get(k) for k in expected} == expected


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

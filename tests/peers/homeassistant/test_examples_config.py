"""The examples as Home Assistant's own checks see them: the configuration check, the
template names they use, and (last of the tier) the log of everything the tier did."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import BLUEPRINT, PACKAGE, Lookout, example_text

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]


class _Loader(yaml.SafeLoader):
    """YAML with Home Assistant's ``!input`` tag (blueprints)."""


_Loader.add_constructor("!input", lambda loader, node: f"!input {node.value}")


def names_in_templates(document: Any) -> set[str]:
    """Every name a template of the example may read: script fields, blueprint inputs,
    and variables set at the top or by a ``variables`` step."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("fields", "variables"):
                if isinstance(node.get(key), dict):
                    names.update(node[key])
            if isinstance(node.get("blueprint"), dict):
                names.update(node["blueprint"].get("input") or {})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return names


async def test_no_name_the_examples_use_is_also_a_template_function(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    # A field left out of a call is undefined in the script's templates, unless its name is
    # also one of Home Assistant's template globals (labels, areas, states …): then it reads
    # as that function and default() never applies.
    names = set()
    for path in (PACKAGE, BLUEPRINT):
        names |= names_in_templates(yaml.load(example_text(path), Loader=_Loader))  # noqa: S506
    assert {"camera", "condition", "question"} <= names
    shadowed = [
        name for name in sorted(names)
        if await homeassistant.render_template(f"{{{{ {name} is defined }}}}") is True
    ]  # fmt: skip
    assert shadowed == []


async def test_check_config_passes_with_the_examples(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    result = await homeassistant.check_config()
    assert result.ok, result.output
    # And the check of the running Home Assistant (what its UI's "Check configuration" does).
    checked = await homeassistant.api("POST", "/api/config/core/check_config")
    assert checked["result"] == "valid", checked


async def test_the_home_assistant_log_has_no_errors_or_warnings(
    homeassistant: HomeAssistant,
) -> None:
    """Runs last in the tier (see conftest.py): everything the tier made Home Assistant do."""
    await homeassistant.mqtt_barrier()
    assert homeassistant.errors_and_warnings() == []

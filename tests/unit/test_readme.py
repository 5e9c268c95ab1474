"""The README stays true: its shell lines are the tested one-liners, its settings exist."""

from __future__ import annotations

import re

from pydantic import BaseModel

from service.settings import Settings, load_settings
from tests.broker import REPO

README = (REPO / "README.md").read_text()


def command_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("mosquitto_")]


def test_readme_one_liners_are_the_tested_ones():
    section = README[README.index("## One-liners") :]
    block = section[section.index("```sh") : section.index("```\n", section.index("```sh") + 5)]
    oneliners = (REPO / "examples" / "oneliners.sh").read_text()
    assert command_lines(block) == command_lines(oneliners)
    # And no other copy of a mosquitto_rr/_pub line elsewhere that the test would not run.
    rest = README.replace(block, "")
    assert [ln for ln in command_lines(rest) if "mosquitto_rr" in ln or "mosquitto_pub" in ln] == []


def _has_path(model: type[BaseModel], path: list[str]) -> bool:
    head, *tail = path
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not tail:
        return True
    annotation = field.annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and _has_path(annotation, tail)
    )


def test_every_setting_the_readme_names_exists():
    keys = set(
        re.findall(
            r"`((?:mqtt|frigate|llm|chat|store|auth|log|limits|watch|homeassistant)\.[a-z_]+)`",
            README,
        )
    )
    assert len(keys) > 40
    missing = sorted(k for k in keys if not _has_path(Settings, k.split(".")))
    assert missing == []


def test_the_example_config_is_valid():
    settings = load_settings(REPO / "lookout.example.yml", environ={})
    assert settings.mqtt.topic_prefix == "lookout"

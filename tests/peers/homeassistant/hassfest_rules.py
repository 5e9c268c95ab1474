"""hassfest's checks of a custom integration's manifest and translations, run with the
installed Home Assistant's own validators (``python hassfest_rules.py <integration dir>``
in Home Assistant's venv; prints every problem, exits 1 if there is any).

Home Assistant's ``script/hassfest`` is not in the homeassistant wheel (nor on PyPI; the
HACS and hassfest GitHub actions are containers), so its rules for a custom integration
(``--integration-path``) are restated here from its sources, ``manifest.py`` and
``translations.py``: the custom-integration manifest schema (``version`` required and a
valid version, ``codeowners`` and ``documentation`` required, known ``iot_class`` and
``integration_type``, no unknown keys), the domain matching the folder and colliding with
no core integration, the keys in hassfest's order; ``strings.json`` and
``translations/en.json`` against the data-entry schema of config and options flows, every
text through ``translation_value_validator`` (``cv.string_with_no_html``, no
single-quoted placeholders, no combined references, no outer spaces), and every
``data_description`` key among the step's ``data``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import homeassistant.components
import homeassistant.helpers.config_validation as cv
import voluptuous as vol
from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
from voluptuous.humanize import humanize_error

IOT_CLASSES = [
    "assumed_state", "calculated", "cloud_polling", "cloud_push", "local_polling", "local_push",
]  # fmt: skip
INTEGRATION_TYPES = ["device", "entity", "hardware", "helper", "hub", "service", "system"]


def version(value: str) -> str:
    try:
        AwesomeVersion(
            value,
            ensure_strategy=[
                AwesomeVersionStrategy.CALVER, AwesomeVersionStrategy.SEMVER,
                AwesomeVersionStrategy.SIMPLEVER, AwesomeVersionStrategy.BUILDVER,
                AwesomeVersionStrategy.PEP440,
            ],
        )  # fmt: skip
    except AwesomeVersionException as err:
        raise vol.Invalid(f"'{value}' is not a valid version.") from err
    return value


def https(value: str) -> str:
    if not value.startswith("https://"):
        raise vol.Invalid("Documentation url is not prefixed with https")
    return value


MANIFEST = vol.Schema(
    {
        vol.Required("domain"): str,
        vol.Required("name"): str,
        vol.Optional("integration_type", default="hub"): vol.In(INTEGRATION_TYPES),
        vol.Optional("config_flow"): bool,
        vol.Optional("mqtt"): [str],
        vol.Required("documentation"): vol.All(vol.Url(), https),
        vol.Optional("issue_tracker"): vol.Url(),
        vol.Optional("requirements"): [str],
        vol.Optional("dependencies"): [str],
        vol.Optional("after_dependencies"): [str],
        vol.Required("codeowners"): [str],
        vol.Optional("loggers"): [str],
        vol.Optional("iot_class"): vol.In(IOT_CLASSES),
        vol.Optional("single_config_entry"): bool,
        vol.Required("version"): vol.All(str, version),
        vol.Optional("import_executor"): bool,
    }
)

RE_PLACEHOLDER_IN_SINGLE_QUOTES = re.compile(r"'{\w+}'")
RE_COMBINED_REFERENCE = re.compile(r"(.+\[%)|(%\].+)")


def text(value: Any) -> str:
    value = cv.string_with_no_html(value)
    if RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(value):
        raise vol.Invalid("the string should not contain placeholders inside single quotes")
    if RE_COMBINED_REFERENCE.search(value):
        raise vol.Invalid("the string should not contain combined translations")
    if value != value.strip():
        raise vol.Invalid("the string should not contain leading or trailing spaces")
    return value


def data_descriptions_described(value: dict[str, Any]) -> dict[str, Any]:
    for step in value["step"].values():
        for key in step.get("data_description", {}):
            if key not in step.get("data", {}):
                raise vol.Invalid(f"data_description key {key} is not in data")
    return value


DATA_ENTRY = vol.All(
    vol.Schema(
        {
            vol.Optional("flow_title"): text,
            vol.Required("step"): {
                str: {
                    vol.Optional("title"): text,
                    vol.Optional("description"): text,
                    vol.Optional("data"): {str: text},
                    vol.Optional("data_description"): {str: text},
                    vol.Optional("menu_options"): {str: text},
                    vol.Optional("submit"): text,
                }
            },
            vol.Optional("error"): {str: text},
            vol.Optional("abort"): {str: text},
            vol.Optional("progress"): {str: text},
            vol.Optional("create_entry"): {str: text},
        }
    ),
    data_descriptions_described,
)
STRINGS = vol.Schema(
    {
        vol.Optional("title"): text,
        vol.Optional("config"): DATA_ENTRY,
        vol.Optional("options"): DATA_ENTRY,
        vol.Optional("exceptions"): cv.schema_with_slug_keys(
            {vol.Optional("message"): text}, slug_validator=cv.slug
        ),
    }
)


def problems(path: Path) -> list[str]:
    found = []
    manifest = json.loads((path / "manifest.json").read_text())
    try:
        MANIFEST(manifest)
    except vol.Invalid as err:
        found.append(f"manifest: {humanize_error(manifest, err)}")
    domain = manifest.get("domain")
    if domain != path.name:
        found.append("manifest: Domain does not match dir name")
    if (Path(homeassistant.components.__file__).parent / str(domain)).exists():
        found.append("manifest: Domain collides with built-in core integration")
    if "iot_class" not in manifest:
        found.append("manifest: Domain is missing an IoT Class")
    keys = list(manifest)
    if keys != sorted(keys, key=lambda k: {"domain": ".domain", "name": ".name"}.get(k, k)):
        found.append("manifest: keys are not sorted correctly: domain, name, then alphabetical")
    for name in ("strings.json", "translations/en.json"):
        if not (path / name).is_file():
            found.append(f"translations: {name} is missing")
            continue
        strings = json.loads((path / name).read_text())
        try:
            STRINGS(strings)
        except vol.Invalid as err:
            found.append(f"translations: Invalid {name}: {humanize_error(strings, err)}")
    return found


if __name__ == "__main__":
    errors = problems(Path(sys.argv[1]))
    print("\n".join(errors) or "ok")
    sys.exit(1 if errors else 0)

"""Loading the configuration: one YAML file, every key overridable from the environment.

The file is found at ``--config PATH``, else ``$LOOKOUT_CONFIG``, else nothing (all
defaults). Environment variables ``LOOKOUT_<SECTION>__<KEY>`` override it, nested with
``__`` (``LOOKOUT_MQTT__PORT=1884``). Values from the environment are read as YAML
scalars, so ``true``, ``1883`` and ``null`` get their natural types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.settings.sections import Settings

ENV_PREFIX = "LOOKOUT_"
CONFIG_ENV = "LOOKOUT_CONFIG"


class ConfigError(Exception):
    """The configuration could not be loaded; ``problems`` lists each one with its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The override tree, and the raw text of each value YAML turned into a non-string."""
    tree: dict[str, Any] = {}
    texts: dict[tuple[str, ...], str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            continue
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
            if not isinstance(value, str):
                texts[tuple(path)] = raw
    return tree, texts


def _use_texts(data: dict[str, Any], errors: list[Any], texts: dict[tuple[str, ...], str]) -> bool:
    """Put back the raw text of env values that failed as YAML-typed values.

    ``007``, ``123456`` or ``2024-10-21`` are a client id, a password and an API version
    to whoever sets them, not the 7, int and date YAML reads them as.
    """
    changed = False
    for err in errors:
        loc = tuple(str(part) for part in err["loc"])
        for path, text in texts.items():
            node: Any = data
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if loc[: len(path)] == path and isinstance(node, dict):
                node[path[-1]] = text
                changed = True
    return changed


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_error(err: Any) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    if err["type"] == "missing":
        message = "required"
    return f"{path}: {message}"


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read the YAML file (if any), apply environment overrides and validate.

    Args:
        path: The YAML file; ``None`` falls back to ``$LOOKOUT_CONFIG`` and then to defaults.
        environ: The environment to read overrides from (``os.environ`` when ``None``).

    Raises:
        ConfigError: With one line per problem, each naming its key path.
    """
    env = dict(os.environ if environ is None else environ)
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{file}: not UTF-8 text (byte {exc.start})"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{file}: not valid YAML: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{file}: the top level must be a mapping of sections"])
        data = loaded
    overrides, texts = _env_overrides(env)
    data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    if _use_texts(data, errors, texts):
        try:
            return Settings.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
    raise ConfigError([_format_error(e) for e in errors])

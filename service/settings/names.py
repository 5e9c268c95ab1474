"""Names that become topic levels: callers, cameras, features and request ids.

They live beside the settings because the configuration validates the same names that
the topic map builds topics from, and the settings sit below every other part.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""The pattern of :data:`NAME_RE`, for pydantic ``Field(pattern=...)``."""

NAME_RE = re.compile(NAME_PATTERN)
"""Callers, cameras, features and ids: one topic level of safe characters.

Test with ``fullmatch``: with ``match``, ``$`` also accepts a trailing newline. The
pattern keeps ``$`` because pydantic's Rust regex engine reads ``.pattern`` too.
"""

RESERVED_USERS = frozenset({"camera", "tools", "status"})
"""First levels under lookout's prefix that are not callers."""

ZONE_NAME_MAX = 64
"""The longest zone name kept (the history's zone column holds 64 characters)."""
_TOPIC_SPECIAL = frozenset("/+#")


def is_zone_name(value: object) -> bool:
    """Whether a zone name from Frigate is safe to keep.

    Frigate puts no rule on zone names (its config takes any YAML key; its UI makes ids
    like ``zone_1a2b3c4d`` from non-ASCII names), so spaces, accents and other scripts
    are kept. Refused: empty or over :data:`ZONE_NAME_MAX` characters, control or
    unpaired surrogate characters, and the MQTT topic specials ``/``, ``+`` and ``#``
    (a zone is also a level of Frigate's ``<camera>/zone/<zone>/state`` topic).
    """
    if not isinstance(value, str) or not 0 < len(value) <= ZONE_NAME_MAX:
        return False
    if value != value.strip():
        return False
    return all(
        ch not in _TOPIC_SPECIAL and ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF
        for ch in value
    )

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

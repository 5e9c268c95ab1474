"""The `lookout` command line: `run`, `check-config`, `grab` and the client commands.

The top of the tree: it may use every part (the client commands go through MQTT like any
other client). :func:`main` is the console entry point.
"""

from __future__ import annotations

from service.cli.main import main

__all__ = [
    "main",
]

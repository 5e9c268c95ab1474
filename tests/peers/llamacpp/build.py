"""Find (building on first use) the llama.cpp server binary and its source tree.

Both come from ``scripts/llama-server``, which caches them under ``.cache/llama.cpp/``;
this module only runs it and hands the paths to fixtures.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "llama-server"
BUILD_TIMEOUT_S = 1800
"""A fresh two-core machine builds in about four minutes; this only catches a hang."""


class BuildError(RuntimeError):
    """``scripts/llama-server`` failed; the message carries the end of its output."""


def _run(*args: str) -> Path:
    label = " ".join([SCRIPT.name, *args])
    try:
        done = subprocess.run(
            [str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{label} took over {BUILD_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise BuildError(f"{label} failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@functools.cache
def server_binary() -> Path:
    """Path of a ready ``llama-server`` (built on the first call on a fresh machine)."""
    return _run()


@functools.cache
def source_dir() -> Path:
    """The unpacked ``vendor/llama.cpp`` tree (downloaded, not built, if missing)."""
    return _run("--source-dir")


def template(name: str) -> str:
    """One of llama.cpp's chat templates from ``models/templates``, unmodified."""
    return (source_dir() / "models" / "templates" / name).read_text(encoding="utf-8")

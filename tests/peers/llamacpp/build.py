"""Find (building on first use) the llama.cpp server binary and its source tree.

Both come from ``scripts/llama-server``, which caches them under ``.cache/llama.cpp/``;
this module only runs it and hands the paths to fixtures. ``prepare`` starts a missing
build in the background at collection, so the other tests run while it compiles; the
tests that need the server wait for it (with their time limit raised by ``WAIT_S``).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

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


_background: list[subprocess.Popen[str]] = []

WAIT_S = 900
"""Added to the time limit of a test that needs the server while it is still being built:
a fresh two-core machine builds in about four minutes, longer while tests run next to it."""


def binary_path() -> Path:
    """Where ``scripts/llama-server`` puts the binary (it may not be there yet)."""
    done = subprocess.run(
        [str(SCRIPT), "--binary-path"], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip())


def start() -> None:
    """Start building the server in the background, unless it is built (or building)."""
    if _background or binary_path().exists():
        return
    _background.append(
        subprocess.Popen(
            [str(SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C of pytest does not cut a build in half
        )
    )


def prepare(items: list[pytest.Item], here: Path) -> None:
    """At collection: if a selected test under ``here`` needs the server and it is not
    built yet, start the build and give those tests ``WAIT_S`` more time."""
    needing = [
        item
        for item in items
        if here in item.path.parents and "llama_binary" in getattr(item, "fixturenames", ())
    ]
    if not needing or binary_path().exists():
        return
    start()
    for item in needing:
        marker = item.get_closest_marker("timeout")
        limit = marker.args[0] if marker and marker.args else item.config.getini("timeout")
        item.add_marker(pytest.mark.timeout(float(limit or 0) + WAIT_S))


@functools.cache
def server_binary() -> Path:
    """Path of a ready ``llama-server`` (waits for a build ``start`` began, or builds)."""
    if not _background:
        return _run()
    proc = _background[0]
    try:
        out, err = proc.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{SCRIPT.name} took over {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise BuildError(f"{SCRIPT.name} failed:\n{err[-4000:]}")
    return Path(out.strip().splitlines()[-1])


@functools.cache
def source_dir() -> Path:
    """The unpacked ``vendor/llama.cpp`` tree (downloaded, not built, if missing)."""
    return _run("--source-dir")


def template(name: str) -> str:
    """One of llama.cpp's chat templates from ``models/templates``, unmodified."""
    return (source_dir() / "models" / "templates" / name).read_text(encoding="utf-8")

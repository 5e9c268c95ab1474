"""Fixtures: a real llama.cpp server on the scripted model (see ``model.py``).

The first run on a machine builds ``llama-server`` (about four minutes on two cores). That
happens at collection time, outside pytest-timeout's per-test budget; a failed build makes
every test that needs the server fail (never skip) with the build's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.llamacpp import build
from tests.peers.llamacpp.model import write_model
from tests.peers.llamacpp.projector import write_projector
from tests.peers.llamacpp.server import LlamaServer

HERE = Path(__file__).parent
_build_error: list[BaseException] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the server before the first test runs, if any selected test needs it."""
    if config.option.collectonly or not any(HERE in item.path.parents for item in items):
        return
    try:
        build.server_binary()
        build.source_dir()
    except build.BuildError as exc:
        _build_error.append(exc)


@pytest.fixture(scope="session")
def llama_binary() -> Path:
    """The ``llama-server`` executable."""
    if _build_error:
        raise _build_error[0]
    return build.server_binary()


@pytest.fixture(scope="session")
def llama_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted GGUF, written once per session."""
    path = tmp_path_factory.mktemp("llama-model") / "scripted.gguf"
    write_model(path)
    return path


@pytest.fixture(scope="session")
def llama_projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made vision projector for ``--mmproj``."""
    path = tmp_path_factory.mktemp("llama-mmproj") / "projector.gguf"
    write_projector(path)
    return path


@pytest.fixture(scope="session")
def llama_server(
    llama_binary: Path, llama_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One server for the session; tests must not stop or kill it (use ``make_llama_server``)."""
    log = tmp_path_factory.mktemp("llama-log") / "llama-server.log"
    with LlamaServer(llama_binary, llama_model, log) as server:
        yield server


@pytest.fixture(scope="session")
def llama_vision_server(
    llama_binary: Path,
    llama_model: Path,
    llama_projector: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LlamaServer]:
    """Like ``llama_server``, with the projector: image parts are accepted (and ignored)."""
    log = tmp_path_factory.mktemp("llama-log") / "llama-vision-server.log"
    with LlamaServer(llama_binary, llama_model, log, mmproj=llama_projector) as server:
        yield server


@pytest.fixture
def make_llama_server(
    llama_binary: Path, llama_model: Path, tmp_path: Path
) -> Iterator[Callable[..., LlamaServer]]:
    """A factory for servers of the test's own (started; stopped after the test)."""
    servers: list[LlamaServer] = []

    def make(**kwargs: Any) -> LlamaServer:
        log = tmp_path / f"llama-server-{len(servers)}.log"
        server = LlamaServer(llama_binary, llama_model, log, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()

"""Fixtures: a real llama.cpp server on the scripted model (see ``model.py``).

The first run on a machine builds ``llama-server`` (about three minutes on two idle
cores, longer beside the tests): it starts in the background at collection, the other
tests run meanwhile, and the tests that need the server wait for it with their time limit
raised for the wait. A failed build makes every test that needs the server fail (never
skip) with the build's output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.peers.llamacpp import build
from tests.peers.llamacpp.model import write_model
from tests.peers.llamacpp.projector import write_projector
from tests.peers.llamacpp.server import LlamaServer

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start building the server now if a selected test needs it (see ``build.prepare``)."""
    if config.option.collectonly:
        return
    build.prepare(items, HERE)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_binary() -> Path:
    """The ``llama-server`` executable (a failed build fails the test, never skips it).

    Waited for in a thread: the session's event loop keeps running meanwhile, so the
    connections that session-scoped fixtures hold (Home Assistant's websocket, MQTT
    clients) answer their pings through a wait of minutes on a fresh machine.
    """
    return await asyncio.to_thread(build.server_binary)


# The session-scoped fixtures below write files and start processes in a thread, for the
# same reason as ``llama_binary``: under a loaded CI machine either can take long enough
# for a blocked event loop to cost the session its Home Assistant websocket.


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted GGUF, written once per session."""
    path = tmp_path_factory.mktemp("llama-model") / "scripted.gguf"
    await asyncio.to_thread(write_model, path)
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made vision projector for ``--mmproj``."""
    path = tmp_path_factory.mktemp("llama-mmproj") / "projector.gguf"
    await asyncio.to_thread(write_projector, path)
    return path


@contextlib.asynccontextmanager
async def _serving(server: LlamaServer) -> AsyncIterator[LlamaServer]:
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_server(
    llama_binary: Path, llama_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LlamaServer]:
    """One server for the session; tests must not stop or kill it (use ``make_llama_server``)."""
    log = tmp_path_factory.mktemp("llama-log") / "llama-server.log"
    async with _serving(LlamaServer(llama_binary, llama_model, log)) as server:
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_vision_server(
    llama_binary: Path,
    llama_model: Path,
    llama_projector: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LlamaServer]:
    """Like ``llama_server``, with the projector: image parts are accepted (and ignored)."""
    log = tmp_path_factory.mktemp("llama-log") / "llama-vision-server.log"
    server = LlamaServer(llama_binary, llama_model, log, mmproj=llama_projector)
    async with _serving(server):
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

"""A private PostgreSQL cluster for the store's tests, from the Debian binaries.

``LOOKOUT_TEST_PG_URL`` points the tests at a server someone else runs. Otherwise a
throwaway cluster is initialised in a temp dir on a free port (as the ``postgres`` user
when the tests run as root, since PostgreSQL refuses to run as root) and removed after.
The shared server on 5432 is never touched.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

from tests.broker import free_port


class PostgresUnavailableError(RuntimeError):
    pass


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise PostgresUnavailableError(
            f"{name} not found: install PostgreSQL (apt-get install postgresql) "
            "or set LOOKOUT_TEST_PG_URL"
        )
    return found


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lookout-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[str] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        subprocess.run(
            [*self._as_user, _bin("initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [*self._as_user, _bin("postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        ready = threading.Event()
        log: list[str] = []

        def pump() -> None:
            assert self.proc is not None
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                log.append(line.rstrip())
                if "ready to accept connections" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise PostgresUnavailableError("postgres did not start:\n" + "\n".join(log[-20:]))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        shutil.rmtree(self.root, ignore_errors=True)


_shared: dict[str, PrivatePostgres] = {}
_shared_lock = threading.Lock()


def shared_server_url() -> str:
    """``LOOKOUT_TEST_PG_URL``, else one private cluster for the whole test session."""
    url = os.environ.get("LOOKOUT_TEST_PG_URL")
    if url:
        return url
    with _shared_lock:
        if "server" not in _shared:
            server = PrivatePostgres()
            server.start()
            atexit.register(server.close)
            _shared["server"] = server
        return _shared["server"].url


def fresh_database(base_url: str | None = None) -> str:
    """A new, empty database on the shared server; returns its URL."""
    import asyncpg  # the test extra installs it

    base = base_url or shared_server_url()
    name = f"lk_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # In a thread: the callers may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result(timeout=30)
    return base.rsplit("/", 1)[0] + "/" + name

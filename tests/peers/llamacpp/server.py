"""Run a real ``llama-server`` on the scripted model, for tests.

The server listens on 127.0.0.1 only. It is started on port 0 and the port it picked is
read from its own "listening on" log line, so parallel test runs never race for a port;
a restart reuses that port, so clients built against :attr:`LlamaServer.base_url` keep
working. Its output goes to a log file (see :attr:`LlamaServer.log_path`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

STOP_GRACE_S = 1.0
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
DEFAULT_ARGS = (
    "--jinja",
    # f32 keys, no flash attention: the model finds the latest trigger through attention
    # scores that differ by about one nat per token at magnitudes near 1e5, below the
    # resolution of f16 keys and of the CPU flash-attention path.
    "--cache-type-k",
    "f32",
    "--cache-type-v",
    "f32",
    "--flash-attn",
    "off",
    "--no-webui",
    "--offline",
    "--threads",
    "2",
)


class ServerError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


class LlamaServer:
    """One ``llama-server`` process: start, stop, kill and restart it.

    Args:
        binary: The ``llama-server`` executable.
        model: The GGUF to serve.
        log_path: File that receives the server's stdout and stderr (appended).
        ctx_size: Total context (``-c``); split evenly over the ``parallel`` slots. The
            model's tokenizer spends about one token per character of ordinary text, so
            a long system prompt with tool schemas takes thousands.
        parallel: Slots (``-np``): requests served at the same time.
        api_key: When set, requests need ``Authorization: Bearer <key>``.
        mmproj: A vision projector (``projector.write_projector``): images are accepted.
        extra_args: More command-line arguments, e.g. ``("--n-predict", "64")``.
        alias: The model name the server reports.
    """

    def __init__(
        self,
        binary: Path,
        model: Path,
        log_path: Path,
        *,
        ctx_size: int = 32768,
        parallel: int = 2,
        api_key: str | None = None,
        mmproj: Path | None = None,
        extra_args: Sequence[str] = (),
        alias: str = "lookout-tiny",
    ) -> None:
        self.binary, self.model, self.log_path = binary, model, log_path
        self.ctx_size, self.parallel, self.api_key = ctx_size, parallel, api_key
        self.mmproj = mmproj
        self.extra_args, self.alias = tuple(extra_args), alias
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``…/v1``)."""
        return f"{self.url}/v1"

    def lookout_llm(self, **extra: Any) -> dict[str, Any]:
        """lookout's ``llm`` section with this server as its one provider, ``local``."""
        provider = {
            "base_url": self.base_url,
            "api_key": self.api_key or "none",
            "model": self.alias,
            "timeout_s": 30,
        }
        return {"providers": {"local": {**provider, **extra}}}

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The full command line."""
        args = [str(self.binary), "--model", str(self.model), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--ctx-size", str(self.ctx_size)]
        args += ["--parallel", str(self.parallel), "--alias", self.alias, *DEFAULT_ARGS]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        if self.mmproj is not None:
            args += ["--mmproj", str(self.mmproj)]
        return [*args, *self.extra_args]

    def start(self, timeout: float = 60.0) -> None:
        """Start and return once ``/health`` answers 200.

        Raises:
            ServerError: It exited, or was not healthy within ``timeout`` seconds.
        """
        if self.running:
            raise ServerError("already running")
        listening = threading.Event()
        found: list[int] = []
        log = self.log_path.open("ab")
        log.write(f"\n$ {' '.join(self.command())}\n".encode())
        log.flush()
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a test's Ctrl-C must not reach it before we stop it
            )
        except OSError:
            log.close()
            raise
        self._pump = threading.Thread(
            target=_pump, args=(self._process.stdout, log, listening, found), daemon=True
        )
        self._pump.start()
        deadline = time.monotonic() + timeout
        # set on the "listening on" line, or when the output ends because the process died
        if not listening.wait(timeout) or not found:
            self.kill()
            raise ServerError(f"llama-server did not start:\n{self.log_tail()}")
        self.port = found[0]
        self._wait_healthy(deadline)

    def _wait_healthy(self, deadline: float) -> None:
        # /health says 503 while the model loads; this build only listens after loading,
        # so the first answer is normally 200 and the loop ends at once.
        delay = 0.01
        while True:
            if self.health() == 200:
                return
            if not self.running or time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"llama-server never became healthy:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def health(self) -> int | None:
        """Status code of ``GET /health``, or None if nothing answers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds.

        A SIGTERM that arrives between the "listening" line and the start of the task loop
        is lost (the loop's start sets ``running = true`` again, tools/server/server-queue.cpp),
        so one still running after a second gets a second SIGTERM, on which llama-server
        exits at once.
        """
        if self._process is None:
            return
        for signal_timeout in (STOP_GRACE_S, timeout):
            if not self.running:
                break
            self._process.terminate()
            try:
                self._process.wait(signal_timeout)
            except subprocess.TimeoutExpired:
                continue
        if self.running:
            self._process.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, as after a crash or OOM kill."""
        if self._process is None:
            return
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start(timeout)

    def _reap(self) -> None:
        assert self._process is not None
        self._process.wait()
        if self._pump is not None:
            self._pump.join(5)
        self._process = self._pump = None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _pump(source: IO[bytes], log: IO[bytes], listening: threading.Event, found: list[int]) -> None:
    """Copy the server's output to the log; note the port from its "listening" line."""
    with log:
        for line in source:
            log.write(line)
            log.flush()
            if not found and (match := LISTENING.search(line)):
                found.append(int(match.group(1)))
                listening.set()
    listening.set()  # output ended: the process is gone

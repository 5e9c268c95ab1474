"""The worker's background tasks besides serving: readiness, Frigate upkeep, housekeeping."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from service import __version__
from service.app.runtime import Runtime
from service.frigate import Upkeep

log = structlog.get_logger(__name__)

JOURNAL_KEEP_S = 7 * 86_400.0
HOUSEKEEPING_EVERY_S = 3600.0


async def shutdown_watchdog(after_s: float = 4.0) -> None:
    """Name what still runs when a shutdown takes too long, so a hang is diagnosable."""
    await asyncio.sleep(after_s)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            log.warning("shutdown_slow_task", task=task.get_name(), awaiting=await_chain(task))


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a suspended task waits, through every coroutine it awaits."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return chain


async def announce_ready(runtime: Runtime) -> None:
    """Log ``lookout_online`` with the start-up time once the bus is connected."""
    await runtime.bus.wait_connected()
    log.info(
        "lookout_online",
        version=__version__,
        startup_s=round(time.time() - runtime.started_at, 3),
        status_topic=runtime.topics.status,
    )


async def warm_llm_import(runtime: Runtime) -> None:
    """Import openai (~0.5 s) in a thread once online, so the first chat does not pay it."""
    if not runtime.providers.by_name:
        return
    await runtime.bus.wait_connected()
    await asyncio.to_thread(importlib.import_module, "openai")


async def frigate_upkeep(runtime: Runtime) -> None:
    """Ends what Frigate left open, imports its history, asks for its camera states."""

    async def publish(topic: str, payload: bytes) -> None:
        await runtime.bus.publish(topic, payload, qos=1)

    upkeep = Upkeep(
        runtime.frigate,
        runtime.events,
        retention_days=runtime.settings.store.retention_days,
        publish=publish,
    )
    await upkeep.run(runtime.bus.next_connection)


async def import_frigate_config(runtime: Runtime) -> None:
    """Learn cameras, zones and names from Frigate's ``/api/config`` (with ``frigate.url``)."""
    try:
        await runtime.frigate.import_api_config()
    except Exception:
        log.exception("frigate_config_import_failed")


async def housekeeping(runtime: Runtime) -> None:
    """Expiry of conversations and the journal, hourly (history has its own retention task)."""
    while True:
        jobs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("conversations", runtime.conversations.purge),
            ("journal", lambda: runtime.journal.purge(JOURNAL_KEEP_S)),
        ]
        for name, job in jobs:
            try:
                removed = await job()
                if removed:
                    log.info("housekeeping_purged", table=name, removed=str(removed))
            except Exception:
                log.exception("housekeeping_failed", table=name)
        await asyncio.sleep(HOUSEKEEPING_EVERY_S)

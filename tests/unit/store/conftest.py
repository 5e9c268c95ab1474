"""Fixtures of the store tests: a SQLite history in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.db import create_engine
from service.store.events import EventStore

T0 = 1_760_000_000.0
DAY = 86_400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite:///{db_path}")
    yield eng
    await eng.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[EventStore]:
    events = EventStore(engine, clock=Clock(T0 + 10 * DAY))
    await events.start()
    yield events
    await events.close()

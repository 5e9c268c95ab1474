"""Workers that start at once on one empty SQLite file all bring the schema up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.broker import REPO

SCRIPT = """
import asyncio, sys
from service.store.db import create_engine, create_tables, dispose
import service.mqtt, service.watch  # every table on the metadata

async def main():
    engine = create_engine(f"sqlite:///{sys.argv[1]}")
    await create_tables(engine)
    await dispose(engine)

asyncio.run(main())
"""


def test_three_processes_create_the_schema_of_one_file_at_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, str(db)], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors

"""Event history: ingest rate through the whole path, and search latency on 1,000,000 events.

Run: ``.venv/bin/python bench/bench_events.py [--quick]``. ``run(quick)`` returns the rows
for ``bench/run_all.py``.

Ingest: real ``frigate/events`` payloads (the replay fixture's full Frigate object shape,
~2 kB each) go through ``FrigateMirror.handle`` -> ``EventStore.submit`` -> the batch
writer into a SQLite file, yielding to the loop every 100 messages as a bus would; the
clock stops when ``flush()`` returns and every object is counted in the table (none
lost). The reference is the naive way: one transaction per message.

Search: a year of history (1,000,000 events on 10 cameras, 3-4 zones each, faces on 5%
of people, 100,000 review segments) is bulk-loaded once into
``/tmp/lookout-bench/`` (reused across runs), analysed, and queried with the filters
the chat tools send: allowed cameras + label + a day, one camera + a week, a face by
name, a busy zone, a rare zone, a label on three cameras for a month, the newest 25,
cars in two zones for a week; plus the recap query on reviews. Targets: >= 5,000
events/s with none lost; search p50 < 5 ms, p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.table import render, row
from service.frigate.mirror import FrigateMirror
from service.mqtt.topics import TopicMap
from service.settings import FrigateSettings
from service.store.db import create_engine
from service.store.events import EventStore
from tests.frigate_replay import tracked_object

CACHE = Path("/tmp/lookout-bench")
SCHEMA_VERSION = 2
EVENT_COLUMNS = (
    "id, camera, label, sub_label, sub_label_score, zones, start_time, end_time, top_score, "
    "has_clip, has_snapshot, description, plate, face, updated_at"
)
REVIEW_COLUMNS = (
    "id, camera, start_time, end_time, severity, objects, sub_labels, zones, audio, "
    "detections, title, summary, short_summary, threat_level, updated_at"
)
NOW = 1_767_225_600.0  # the end of the synthetic year
YEAR = 365 * 86_400.0
CAMERAS = [f"cam_{i}" for i in range(10)]
ZONES = {cam: [f"{cam}_zone_{j}" for j in range(3)] for cam in CAMERAS}
ZONES["cam_0"].append("mailbox")  # a rare zone: one object in a thousand there
LABELS = ["person"] * 6 + ["car"] * 3 + ["dog", "cat", "package", "bicycle"]
FACES = ["Alice", "Bob", "Carol", "Dave", "Erin"]


# -- ingest ------------------------------------------------------------------------


def _messages(objects: int, kinds: tuple[str, ...]) -> list[bytes]:
    """``frigate/events`` payloads: for each object, one message per entry of ``kinds``."""
    out: list[bytes] = []
    for n in range(objects):
        oid = f"{NOW + n:.6f}-{n:06x}"
        cam = CAMERAS[n % len(CAMERAS)]
        zones = ZONES[cam][:2]
        for step, kind in enumerate(kinds):
            inside = zones[: step % 3]
            end = NOW + n + step if kind == "end" else None
            after = tracked_object(
                oid, cam, "person", NOW + n, NOW + n + step, current=inside, entered=inside, end=end
            )
            out.append(json.dumps({"type": kind, "before": after, "after": after}).encode())
    return out


async def _ingest(path: Path, messages: list[bytes]) -> tuple[float, int]:
    engine = create_engine(f"sqlite:///{path}")
    store = EventStore(engine)
    await store.start()
    mirror = FrigateMirror(FrigateSettings(), TopicMap(), store)
    writer = asyncio.create_task(store.run(), name="bench-event-writer")
    started = time.perf_counter()
    for i, payload in enumerate(messages):
        mirror.handle("frigate/events", payload, False)
        if i % 100 == 99:
            await asyncio.sleep(0)  # a bus hands over messages between other work
    await store.flush()
    elapsed = time.perf_counter() - started
    stored = await store.count()
    await store.close()
    await writer
    await engine.dispose()
    return len(messages) / elapsed, stored


async def _naive_ingest(path: Path, messages: list[bytes]) -> float:
    """Reference: parse and upsert each message in its own transaction."""
    engine = create_engine(f"sqlite:///{path}")
    store = EventStore(engine)
    await store.start()
    mirror = FrigateMirror(FrigateSettings(), TopicMap(), store)
    started = time.perf_counter()
    for payload in messages:
        mirror.handle("frigate/events", payload, False)
        await store.flush()
    elapsed = time.perf_counter() - started
    await store.close()
    await engine.dispose()
    return len(messages) / elapsed


# -- a year of history -----------------------------------------------------------------


def _history_rows(
    count: int, seed: int = 11
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    events: list[tuple[Any, ...]] = []
    zones: list[tuple[Any, ...]] = []
    step = YEAR / count
    for i in range(count):
        start = NOW - YEAR + i * step + rng.random() * step
        cam = CAMERAS[rng.randrange(len(CAMERAS))]
        label = LABELS[rng.randrange(len(LABELS))]
        entered = [z for z in ZONES[cam] if rng.random() < (0.001 if z == "mailbox" else 0.35)]
        face = rng.choice(FACES) if label == "person" and rng.random() < 0.05 else None
        plate = f"{rng.randrange(100, 999)}ABC" if label == "car" and rng.random() < 0.3 else None
        oid = f"{start:.6f}-{i:06x}"
        events.append(
            (oid, cam, label, face, 0.9 if face else None, json.dumps(entered), start,
             start + 20 + rng.random() * 60, 0.7 + rng.random() * 0.29, 1, 1, None, plate,
             face, start + 90)
        )  # fmt: skip
        zones.extend((oid, zone, start) for zone in entered)
    return events, zones


def _reviews(count: int, seed: int = 12) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    out = []
    step = YEAR / count
    for i in range(count):
        start = NOW - YEAR + i * step + rng.random() * step
        cam = CAMERAS[rng.randrange(len(CAMERAS))]
        severity = "alert" if rng.random() < 0.3 else "detection"
        titled = rng.random() < 0.5
        out.append(
            (f"{start:.6f}-r{i:05x}", cam, start, start + 30 + rng.random() * 120, severity,
             '["person"]', "[]", json.dumps(ZONES[cam][:1]), "[]", "[]",
             "Someone at the door" if titled else None,
             "A person walks up and rings." if titled else None, None, 0 if titled else None,
             start + 200)
        )  # fmt: skip
    return out


def _paths(count: int) -> tuple[Path, Path, bool]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"events-{count}-v{SCHEMA_VERSION}.db"
    partial = path.with_suffix(".partial")
    if not path.exists():
        for leftover in CACHE.glob(partial.name + "*"):
            leftover.unlink()
    return path, partial, path.exists()


def _bulk_load(partial: Path, count: int) -> None:
    events, zones = _history_rows(count)
    db = sqlite3.connect(partial)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    marks15 = ",".join("?" * 15)
    # Columns named: later schema versions add columns after these.
    db.executemany(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({marks15})", events)  # noqa: S608 - constant
    db.executemany("INSERT INTO event_zones VALUES (?, ?, ?)", zones)
    db.executemany(
        f"INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES ({marks15})",  # noqa: S608 - constant
        _reviews(count // 10),
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def _prepare_history(count: int) -> Path:
    """Build the history file once (tables by the store, rows by bulk insert), then reuse it."""
    path, partial, ready = await asyncio.to_thread(_paths, count)
    if ready:
        return path
    engine = create_engine(f"sqlite:///{partial}")
    await EventStore(engine).start()
    await engine.dispose()
    await asyncio.to_thread(_bulk_load, partial, count)
    engine = create_engine(f"sqlite:///{partial}")
    await EventStore(engine).optimize()
    await engine.dispose()
    await asyncio.to_thread(partial.rename, path)
    return path


def _queries(
    store: EventStore, rng: random.Random
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    def day_window(days: float) -> tuple[float, float]:
        end = NOW - rng.random() * 300 * 86_400
        return end - days * 86_400, end

    def allowed_person_day() -> Awaitable[Any]:
        after, before = day_window(1)
        return store.search(cameras=CAMERAS, labels=["person"], after=after, before=before)

    def one_camera_week() -> Awaitable[Any]:
        after, before = day_window(7)
        return store.search(cameras=[rng.choice(CAMERAS)], after=after, before=before)

    def face() -> Awaitable[Any]:
        return store.search(cameras=CAMERAS, sub_labels=[rng.choice(FACES).lower()])

    def busy_zone() -> Awaitable[Any]:
        cam = rng.choice(CAMERAS)
        return store.search(cameras=CAMERAS, labels=["person"], zones=[ZONES[cam][0]])

    def rare_zone() -> Awaitable[Any]:
        return store.search(zones=["mailbox"])

    def package_month() -> Awaitable[Any]:
        after, before = day_window(30)
        cams = rng.sample(CAMERAS, 3)
        return store.search(cameras=cams, labels=["package"], after=after, before=before)

    def newest() -> Awaitable[Any]:
        return store.search(cameras=CAMERAS)

    def cars_two_zones_week() -> Awaitable[Any]:
        after, before = day_window(7)
        cam = rng.choice(CAMERAS)
        return store.search(labels=["car"], zones=ZONES[cam][1:3], after=after, before=before)

    return [
        ("allowed cameras + person + 1 day", allowed_person_day),
        ("one camera + 7 days", one_camera_week),
        ("face by name, all time", face),
        ("busy zone + person", busy_zone),
        ("rare zone", rare_zone),
        ("package, 3 cameras, 30 days", package_month),
        ("newest 25", newest),
        ("car in 2 zones, 7 days", cars_two_zones_week),
    ]


async def _search(
    path: Path, rounds: int
) -> tuple[list[float], dict[str, list[float]], list[float], int]:
    engine = create_engine(f"sqlite:///{path}")
    store = EventStore(engine)
    total = await store.count()
    rng = random.Random(5)
    queries = _queries(store, rng)
    for _, make in queries:  # warm the page cache and the connection pool
        await make()
    per: dict[str, list[float]] = {name: [] for name, _ in queries}
    for _ in range(rounds):
        for name, make in queries:
            started = time.perf_counter()
            await make()
            per[name].append((time.perf_counter() - started) * 1000)
    recaps: list[float] = []
    for _ in range(rounds):
        end = NOW - rng.random() * 300 * 86_400
        started = time.perf_counter()
        await store.reviews(after=end - 86_400, before=end, cameras=CAMERAS)
        recaps.append((time.perf_counter() - started) * 1000)
    await engine.dispose()
    return [t for times in per.values() for t in times], per, recaps, total


def _remove_tree(folder: Path) -> None:
    for file in folder.glob("*"):
        file.unlink()
    folder.rmdir()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- rows ------------------------------------------------------------------------------


async def run_async(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    work = CACHE / f"ingest-{os.getpid()}"
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    try:
        count = 3_000 if quick else 40_000
        distinct = _messages(count, ("new",))
        rate, stored = await _ingest(work / "distinct.db", distinct)
        naive = await _naive_ingest(work / "naive.db", distinct[: 300 if quick else 2_000])
        ok = stored == len(distinct)
        rows.append(row(f"ingest {len(distinct)} new objects (msg/s)", rate, naive,
                        f">= 5000/s, {'none' if ok else 'SOME'} lost", rate >= 5_000 and ok))  # fmt: skip
        lifecycle = _messages(count // 4, ("new", "update", "update", "end"))
        rate, stored = await _ingest(work / "lifecycle.db", lifecycle)
        ok = stored == count // 4
        rows.append(row(f"ingest {len(lifecycle)} msgs new/upd/upd/end (msg/s)", rate, None,
                        f">= 5000/s, {'none' if ok else 'SOME'} lost", rate >= 5_000 and ok))  # fmt: skip
    finally:
        await asyncio.to_thread(_remove_tree, work)
    size = 20_000 if quick else 1_000_000
    path = await _prepare_history(size)
    all_times, per, recaps, total = await _search(path, 10 if quick else 150)
    label = f"{total // 1000}k" if total < 1_000_000 else f"{total / 1e6:g}M"
    p50, p99 = _pct(all_times, 0.5), _pct(all_times, 0.99)
    rows.append(row(f"search p50 on {label} events (ms)", p50, None, "< 5 ms", p50 < 5))
    rows.append(row(f"search p99 on {label} events (ms)", p99, None, "< 20 ms", p99 < 20))
    worst_name = max(per, key=lambda n: _pct(per[n], 0.99))
    worst = _pct(per[worst_name], 0.99)
    rows.append(row(f"  slowest kind p99: {worst_name}", worst, None, "< 20 ms", worst < 20))
    r50, r99 = _pct(recaps, 0.5), _pct(recaps, 0.99)
    rows.append(row(f"recap (reviews, 1 day) p50/{label} (ms)", r50, None, "< 5 ms", r50 < 5))
    rows.append(row(f"recap (reviews, 1 day) p99/{label} (ms)", r99, None, "< 20 ms", r99 < 20))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The benchmark rows (``figure, lookout, reference, ratio, target, met``)."""
    return asyncio.run(run_async(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--detail", action="store_true", help="also print p50/p99 per query kind")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(quick=args.quick)
    print(render(rows))
    print(
        f"\nSQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {time.perf_counter() - started:.1f} s"
    )
    if args.detail:
        size = 20_000 if args.quick else 1_000_000
        _, per, _, _ = asyncio.run(_search(CACHE / f"events-{size}-v{SCHEMA_VERSION}.db", 50))
        for name, times in per.items():
            print(f"  {name:<36} p50 {_pct(times, 0.5):6.2f} ms   p99 {_pct(times, 0.99):6.2f} ms")


if __name__ == "__main__":
    main()

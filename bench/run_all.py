"""Every benchmark in one run, one table: figure, lookout, reference, ratio, target, met.

Run: ``make bench`` (full, about 5 minutes on 2 cores) or ``make bench-quick`` (well
under a minute), i.e. ``.venv/bin/python bench/run_all.py [--quick | --smoke]``.

Sections, in order: start-up and idle RSS (``bench_startup``), frame preparation
(``bench_frames``), event ingest and search (``bench_events``), watch efficiency
(``bench_watch``), several workers (``bench_cluster``: one and two workers side by side
on PostgreSQL, and a takeover after SIGKILL), then one worker (``bench.harness.Stack``: broker, fake LLM, the real
``lookout run``) that serves the chat benchmarks (``bench_chat``) and the frame ingest
(``bench_ingest``) and is then measured for footprint: RSS after that load, and RSS
growth over a repeat of it.

A full run writes the table to ``bench/results.md`` (``--quick``:
``bench/results-quick.md``) with the date, machine and command; ``--smoke`` (tiny
sizes, for the test suite) writes none unless ``--results`` names a file. ``--json``
writes the rows, by section, for programs. A section that fails becomes one row that
says so, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.table import render, row  # noqa: E402

Rows = list[dict[str, Any]]
COLUMNS = ("figure", "lookout", "reference", "ratio", "target", "met")
GROWTH_MB = 3.0
"""RSS growth over a repeat that still counts as none (allocator noise)."""


def normalize(r: dict[str, Any]) -> dict[str, str]:
    """One row in the table's text form, whichever way its benchmark built it."""
    out: dict[str, str] = {}
    for key in COLUMNS:
        value = r.get(key)
        if key == "met":
            out[key] = ("yes" if value else "NO") if isinstance(value, bool) else str(value)
        elif value is None:
            out[key] = "-"
        elif isinstance(value, float):
            out[key] = f"{value:.2f}" if key == "ratio" else f"{value:.3g}"
        else:
            out[key] = str(value)
    return out


def failed(section: str, exc: BaseException) -> Rows:
    """The row a section that raised leaves in the table."""
    return [row(f"{section}: FAILED ({type(exc).__name__}: {exc})"[:160], float("nan"),
                None, "runs", False)]  # fmt: skip


# -- the sections --------------------------------------------------------------------------


def startup(size: str) -> Rows:
    from bench import bench_startup

    return bench_startup.run(quick=size != "full")


def frames(size: str) -> Rows:
    from bench import bench_frames

    return bench_frames.run(quick=size != "full")


def events(size: str) -> Rows:
    from bench import bench_events

    return bench_events.run(quick=size != "full")


def watch(size: str) -> Rows:
    try:
        from bench import bench_watch
    except ImportError:
        # HOOK (issue 8): bench/bench_watch.py is written by the watch engineer; once it
        # exists with ``run(quick) -> rows`` this section runs it.
        return [row("watch efficiency: bench/bench_watch.py not there yet", float("nan"),
                    None, "<= 1/10 of upstream's calls", False)]  # fmt: skip
    return bench_watch.run(quick=size != "full")


def cluster(size: str) -> Rows:
    from bench import bench_cluster

    return bench_cluster.run(size=size)


INGEST_S = {"full": 60.0, "quick": 10.0, "smoke": 2.0}
INGEST_CAMERAS = {"full": 16, "quick": 16, "smoke": 4}
REPEAT_INGEST_S = {"full": 20.0, "quick": 3.0, "smoke": 1.0}
REPEATS = {"full": 2, "quick": 1, "smoke": 1}


async def _worker_sections(size: str) -> tuple[Rows, Rows, Rows]:
    """Chat, ingest and footprint rows, from one worker that serves all of it."""
    from bench import bench_chat, bench_ingest
    from bench.harness import ChatClient, Stack, StackConfig

    async with Stack(StackConfig(llm=True)) as stack:
        idle = stack.rss_mb()
        chat_rows = await bench_chat.run_on(stack, size)
        cams = INGEST_CAMERAS[size]
        ingest = await bench_ingest.stream(stack, INGEST_S[size], cams)
        ingest_rows = bench_ingest.rows_for(ingest, cams)
        after = stack.rss_mb()
        # The repeat: the concurrent chats and a shorter ingest again. Python keeps what
        # it allocated for the first round, so the same load again should not grow it.
        _, _, conversations, tokens = bench_chat.SIZES[size]
        async with ChatClient(stack) as chats:
            for _ in range(REPEATS[size]):
                await bench_chat.many_round(stack, chats, conversations, tokens)
                await bench_ingest.stream(stack, REPEAT_INGEST_S[size], cams)
        repeated = stack.rss_mb()
    growth = repeated - after
    footprint = [
        row("RSS after the chat + ingest load (MB); reference: idle", after, idle, "< 130 MB",
            after < 130),
        row(f"RSS growth over {REPEATS[size]} repeat(s) of the load (MB): {after:.1f} -> "
            f"{repeated:.1f}",
            growth, None, f"no growth (< {GROWTH_MB:g} MB)", growth < GROWTH_MB, " MB"),
    ]  # fmt: skip
    return chat_rows, ingest_rows, footprint


def _own_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy so far (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# -- the run -------------------------------------------------------------------------------


def run(size: str) -> tuple[dict[str, Rows], float]:
    """Every section's rows, by section name, and the seconds it all took."""
    started = time.perf_counter()
    sections: dict[str, Rows] = {}
    simple: list[tuple[str, Callable[[str], Rows]]] = [
        ("start-up and footprint", startup),
        ("frame preparation", frames),
        ("event ingest and search", events),
        ("watch efficiency", watch),
        ("several workers", cluster),
    ]
    for name, fn in simple:
        t0 = time.perf_counter()
        try:
            sections[name] = fn(size)
        except Exception as exc:
            traceback.print_exc()
            sections[name] = failed(name, exc)
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        chat_rows, ingest_rows, footprint = asyncio.run(_worker_sections(size))
    except Exception as exc:
        traceback.print_exc()
        chat_rows = failed("chat", exc)
        ingest_rows, footprint = [], []
    print(
        f"[chat, ingest, footprint: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True
    )
    sections["chat"] = chat_rows
    sections["frame ingest"] = ingest_rows
    sections["start-up and footprint"] = sections["start-up and footprint"] + footprint
    order = ["chat", "several workers", "start-up and footprint", "frame preparation",
             "frame ingest", "event ingest and search", "watch efficiency"]  # fmt: skip
    return {name: sections[name] for name in order}, time.perf_counter() - started


def table(sections: dict[str, Rows]) -> str:
    """One table; each section starts with a row naming it."""
    rows: list[dict[str, str]] = []
    for name, section_rows in sections.items():
        rows.append(dict.fromkeys(COLUMNS, "") | {"figure": f"**{name}**"})
        rows += [normalize(r) for r in section_rows]
    return render(rows)


def machine() -> str:
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    os_name = platform.platform(terse=True)
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {mem}, {os_name}, Python {platform.python_version()}"


def write_results(
    path: Path, text: str, command: str, elapsed: float, others: float | None
) -> None:
    load = "" if others is None else f"; other processes kept {others:.2f} cores busy on average"
    path.write_text(
        f"# Benchmark results\n\n"
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n"
        f"- command: `{command}`\n"
        f"- took: {elapsed:.0f} s{load}\n\n"
        f"{text}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, well under a minute")
    mode.add_argument(
        "--smoke", action="store_true", help="tiny sizes: do the benchmarks still run"
    )
    parser.add_argument("--results", type=Path, help="write the table here (markdown)")
    parser.add_argument("--json", type=Path, help="write the rows here, by section")
    args = parser.parse_args()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    busy0, own0 = _busy_seconds(), _own_seconds()
    sections, elapsed = run(size)
    busy1 = _busy_seconds()
    text = table(sections)
    print(text)
    # What the rest of the machine used meanwhile: a hint of how shared the run was.
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0 - (_own_seconds() - own0)) / elapsed)
    print(f"\n{size} run: {elapsed:.0f} s; machine: {machine()}")
    command = ".venv/bin/python bench/run_all.py" + {"full": "", "quick": " --quick",
                                                      "smoke": " --smoke"}[size]  # fmt: skip
    results = args.results or {"full": REPO / "bench" / "results.md",
                               "quick": REPO / "bench" / "results-quick.md"}.get(size)  # fmt: skip
    if results is not None:
        write_results(results, text, command, elapsed, others)
        print(f"table written to {results}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({k: [normalize(r) for r in v] for k, v in sections.items()})
        )
    if any(": FAILED (" in str(r.get("figure")) for rows in sections.values() for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

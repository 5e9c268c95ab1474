"""Shared table printing for the benchmarks: figure, lookout, reference, ratio, target, met."""

from __future__ import annotations

from typing import Any


def row(
    figure: str, lookout: float, reference: float | None, target: str, met: bool, unit: str = ""
) -> dict[str, Any]:
    ratio = (lookout / reference) if reference else None
    return {
        "figure": figure,
        "lookout": f"{lookout:.3g}{unit}",
        "reference": f"{reference:.3g}{unit}" if reference is not None else "-",
        "ratio": f"{ratio:.2f}" if ratio is not None else "-",
        "target": target,
        "met": "yes" if met else "NO",
    }


def render(rows: list[dict[str, Any]]) -> str:
    cols = ["figure", "lookout", "reference", "ratio", "target", "met"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["| " + " | ".join(c.ljust(widths[c]) for c in cols) + " |"]
    lines.append("|" + "|".join("-" * (widths[c] + 2) for c in cols) + "|")
    lines += ["| " + " | ".join(str(r[c]).ljust(widths[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)

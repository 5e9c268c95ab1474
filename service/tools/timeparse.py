"""Times from models and users: parse strictly, present in the server's local zone.

Upstream Frigate cut ``Z`` and offsets off and read what was left as local time, and
dropped the filter silently when parsing failed. Here an offset is honoured, a naive
time is local, a bare date is local midnight, and anything else is an error the model
sees and can correct.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TimeParseError(ValueError):
    """A time string that is not ISO 8601."""


def local_zone(name: str | None = None) -> dt.tzinfo:
    """The configured IANA zone, else the server's local zone."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    tz = dt.datetime.now().astimezone().tzinfo
    return tz if tz is not None else dt.UTC


def zone_name(tz: dt.tzinfo) -> str:
    """A readable name for a zone: the IANA key when there is one."""
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return key
    return dt.datetime.now(tz).strftime("%Z") or "UTC"


def parse_time(text: str, tz: dt.tzinfo) -> float:
    """Unix seconds for an ISO 8601 date or date-time.

    Args:
        text: ``2026-11-24``, ``2026-11-24T08:00``, ``2026-11-24 08:00:00``,
            ``2026-11-24T08:00:00Z`` or ``…+01:00``.
        tz: The zone for naive values.

    Raises:
        TimeParseError: The text is not one of those forms.
    """
    raw = text.strip()
    if not raw:
        raise TimeParseError("empty time")
    value = raw[:-1] + "+00:00" if raw[-1] in "zZ" else raw
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            parsed = dt.datetime(day.year, day.month, day.day)
        else:
            parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TimeParseError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2026-11-24T08:00:00 (local) "
            "or 2026-11-24T07:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.timestamp()


def local_text(ts: float | None, tz: dt.tzinfo) -> str | None:
    """``2026-11-24 08:05:13`` in the local zone (24-hour, with the date)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")

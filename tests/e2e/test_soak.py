"""A 60-second soak of the real worker (``bench/soak.py``): nothing lost, memory and fds flat.

Bounds, and why:

* RSS may grow less than ``RSS_GROWTH_MB`` between the first sample (after 10 s of traffic,
  once imports, connection pools and caches are warm) and the last one. A steady minute
  grows it by about 2 MB (SQLite's page caches filling as the history grows, allocator
  noise); a leak of even one 40 KB frame or one chat chain per request (300+ requests, 360
  frames) would pass the bound.
* Open file descriptors may drift by at most ``FD_DRIFT``: sockets (broker, model server)
  and SQLite files are pooled, so the count is flat unless something is not closed.
"""

from __future__ import annotations

import pytest

from bench import soak

# The soak sets its worker's store itself (bench/soak.py: SQLite, as the benchmarks measure).
pytestmark = [pytest.mark.e2e, pytest.mark.store_independent]

SECONDS = 60.0
RSS_GROWTH_MB = 12.0
FD_DRIFT = 3


@pytest.mark.timeout(180)
def test_soak_one_minute_loses_nothing_and_stays_flat():
    result = soak.run(SECONDS)
    summary = soak.render(result)
    assert result["exit_code"] == 0, summary
    # Zero lost replies, and never a second terminal one.
    assert result["sent"] >= 250, summary
    assert result["answered"] == result["sent"] and result["lost"] == 0, summary
    assert result["more_than_one_terminal"] == 0, summary
    # Only the injected faults fail, each with its documented code.
    assert not result["unexpected_errors"], summary
    assert result["errors"].get("llm_unavailable", 0) == result["by_kind"]["chat"] // (
        soak.FAULT_EVERY
    ), summary
    assert not result["error_log_lines"], summary
    rss, fds = result["rss_mb"], result["fds"]
    assert len(result["samples"]) >= 5, summary
    assert rss["last"] - rss["first"] < RSS_GROWTH_MB, summary
    assert abs(fds["last"] - fds["first"]) <= FD_DRIFT, summary
    assert fds["max"] - fds["first"] <= FD_DRIFT, summary

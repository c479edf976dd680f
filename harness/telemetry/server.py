"""The server's own view over a step: its Prometheus gauges read at a fixed interval.

What an adapter declares in `MetricsPage.series` (requests running and waiting, KV-cache
use, prefix-cache hits, queue time) is scraped every `telemetry.server_interval_s` while a
step runs, through the one scraper (`harness/prometheus.py`); the report draws it against
the client's latency over the same seconds. A page that cannot be read gives no row (a gap
in the series, never a zero).
"""

from __future__ import annotations

from typing import Any

from harness.prometheus import MetricsPage, scrape
from harness.telemetry.base import Sampler


class ServerSeriesSampler(Sampler):
    name = "server"

    def __init__(self, url: str, page: MetricsPage, interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        self.url = url
        self.page = page
        self.available = bool(page.series)
        self.reason = "" if self.available else "the adapter declares no server time series"

    def read(self) -> dict[str, Any] | None:
        found = scrape(self.url, self.page.series, timeout_s=max(self.interval_s, 0.5))
        if not found:
            return None
        if "kv_cache_pct" in found and found["kv_cache_pct"] <= 1.0:  # vLLM: a fraction
            found["kv_cache_pct"] *= 100.0
        return found

"""The one Prometheus scraper: a server's metrics page read into the figures an adapter names.

An adapter declares what it reads as data (`Adapter.metrics`: a `MetricsPage` mapping our
keys to exact samples); the harness scrapes it before and after each step and the adapter's
`breakdown` turns the two readings into the step's server view. Parsing is
`prometheus_client`'s: exact names (a longer name with the same start is never summed in),
labels matched by value, timestamps, NaN and +Inf all as the exposition format defines them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from harness.net import http

if TYPE_CHECKING:
    from harness.adapter import Server


@dataclass(frozen=True)
class Sample:
    """Every sample called `name` whose labels include `labels`, summed (e.g. all versions
    of one model). `name` is written as it appears on the page (`..._total`, `..._sum`)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsPage:
    """Where a server publishes its metrics, and what we read there."""

    samples: Mapping[str, Sample]  # our key -> the samples summed into it
    path: str = "/metrics"
    port: str = "http"  # which of the server's named ports serves the page
    # gauges read at a fixed interval during each step (harness/telemetry/server.py), by
    # the keys of SERIES: requests running and waiting, KV-cache use, cache hits so far
    series: Mapping[str, Sample] = field(default_factory=dict)


# What a server's time series may show, our key -> what it means (the report's legend).
SERIES = {
    "running": "requests running",
    "waiting": "requests waiting",
    "kv_cache_pct": "KV cache used (%)",
    "prefix_cache_hits": "prefix-cache hits (tokens, cumulative)",
    "queue_s": "queue time (s, cumulative)",
}


def parse(text: str, samples: Mapping[str, Sample]) -> dict[str, float]:
    """Our figures from a page's text; a key whose samples are absent is left out (a server
    that has not served yet may not publish a counter at all)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for key, wanted in samples.items():
                if _same_name(wanted.name, sample.name, family.name, family.type) and all(
                    sample.labels.get(k) == v for k, v in wanted.labels.items()
                ):
                    found[key] = found.get(key, 0.0) + float(sample.value)
    return found


def _same_name(wanted: str, sample: str, family: str, kind: str) -> bool:
    # The parser names a counter's samples `<family>_total` even where the page wrote the
    # bare family name (Triton's nv_* counters): accept the name as the page wrote it.
    renamed = kind == "counter" and family == wanted and sample == f"{wanted}_total"
    return sample == wanted or renamed


def scrape(url: str, samples: Mapping[str, Sample], timeout_s: float = 5.0) -> dict[str, float]:
    """Read one page; {} when it cannot be read or parsed, so the step has no server view
    (which the report shows as absent, never as zero)."""
    try:
        response = http().get(url, timeout=timeout_s)
        response.raise_for_status()
        return parse(response.text, samples)
    except (httpx.HTTPError, ValueError):
        return {}


def page_url(server: Server, page: MetricsPage) -> str | None:
    """The page of a started server: its `page.port`, on the host of its base URL."""
    if server.base_url is None:
        return None
    base = httpx.URL(server.base_url)
    port = server.ports.get(page.port) or (base.port if page.port == "http" else None)
    if port is None:
        return None
    return f"{base.scheme}://{base.host}:{port}{page.path}"

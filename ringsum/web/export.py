"""RINGSUM_EXPORT: the window sums of chosen keys as Prometheus series, read at scrape.

Each live key under the exported prefixes is one ``ringsum_window_sum{key="..."}``
gauge, its sum over the window as of the scrape. The keys are read through the
storage's listing, a page at a time (on Redis: the sorted listing index, never a scan
of the keyspace), in key order. Cardinality is what breaks a Prometheus server, so at
most RINGSUM_EXPORT_MAX_KEYS keys are exported, the first in key order (the same ones
scrape after scrape); ``ringsum_window_sum_keys_dropped`` counts the rest. Counting
them is a walk too, so it stops after ``COUNT_BEYOND`` times the cap: past that, the
count reads "at least", and a scrape stays bounded whatever the keyspace holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ..core.said_once import server_wide
from ..storage import Storage

log = logging.getLogger(__name__)

PAGE = 1000  # keys per listing call: one short Redis script each, never one long one
COUNT_BEYOND = 10  # keys past the cap are counted up to this many times the cap


class WindowSumExport:
    """The exported sums of one app: its prefixes ("" = every key) and its cap."""

    def __init__(self, prefixes: tuple[str, ...], max_keys: int) -> None:
        self.prefixes = prefixes
        self.max_keys = max_keys
        self._warned = False

    def collect(self, storage: Storage) -> Iterator[Metric]:
        """The two families; StorageError from the listing goes to the caller."""
        sums = GaugeMetricFamily(
            "ringsum_window_sum",
            "Sum over the window as of the scrape, per exported key (RINGSUM_EXPORT).",
            labels=["key"],
        )
        exported, dropped = self._read(storage, sums)
        if dropped and not self._warned:
            self._warned = True
            log.warning(
                "RINGSUM_EXPORT matches more than RINGSUM_EXPORT_MAX_KEYS=%d live keys: the first %d in key order "
                "are exported, ringsum_window_sum_keys_dropped counts the rest; narrow the prefixes or raise the cap",
                self.max_keys,
                exported,
                extra=server_wide(),
            )
        yield sums
        yield GaugeMetricFamily(
            "ringsum_window_sum_keys_dropped",
            f"Live keys under RINGSUM_EXPORT not exported, beyond RINGSUM_EXPORT_MAX_KEYS "
            f"(counted up to {COUNT_BEYOND} x the cap).",
            value=dropped,
        )

    def _read(self, storage: Storage, sums: GaugeMetricFamily) -> tuple[int, int]:
        """Fill ``sums``; the keys exported and the keys dropped."""
        exported = dropped = 0
        most_dropped = COUNT_BEYOND * self.max_keys
        for prefix in self.prefixes:
            after = ""
            while dropped < most_dropped:
                page = storage.keys(prefix, PAGE, after)
                for key, total in page.metrics:
                    if exported < self.max_keys:
                        sums.add_metric([key], total)
                        exported += 1
                    else:
                        dropped += 1
                if page.next is None:
                    break
                after = page.next
        return exported, min(dropped, most_dropped)

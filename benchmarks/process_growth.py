"""``/process`` as the ledger grows: ``python -m benchmarks.process_growth``
(or ``python -m benchmarks.run --only growth``).

Two tables, for ledger sizes of 1,000 to 1,000,000 records:

- the handler alone (``Handler.respond``, no Flask, no HTTP) against the
  in-memory ledger (a test double indexed by (execution_id, processor)) and
  against what production uses in front of BigQuery, the in-process cache of
  :class:`~processors.dedupe.BigQueryLedger`;
- the BigQuery lookup itself on bqemulator as the ``processed_events`` table
  grows (:func:`benchmarks.ledger_lookup.lookup_growth`).

The side-by-side against a bare Flask endpoint is :mod:`benchmarks.process_overhead`.
"""

from __future__ import annotations

import datetime as dt
import random
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click
from rich.table import Table

from benchmarks.bench_io import (
    machine_info,
    rss_mib,
    save_and_report,
    sizes_callback,
    wide_console,
)
from benchmarks.bq_fill import emulated_bigquery
from benchmarks.ledger_lookup import LOOKUP_PROBES, lookup_growth, report_lookup_growth
from benchmarks.process_apps import PROCESSOR, deliveries, event_ids, handler_of, handler_us
from processors.dedupe import BigQueryLedger, LedgerEntry, RecentlyProcessed
from processors.service import Handler
from processors.testing import InMemoryLedger

console = wide_console(160, honour_columns=True)
ROOT = Path(__file__).resolve().parents[1]
LEDGER_SIZES = (1_000, 10_000, 100_000, 1_000_000)
"""Records already processed, for both growth tables."""
MIN_SIZE = 100
"""Probes are drawn from a ledger's records, so no size may be smaller."""


@dataclass
class FilledLedgers:
    """The two ledgers of one size, filled, and the pushes timed against them."""

    records: int
    memory: Handler
    cached: Handler
    redeliveries: list[bytes]
    memory_fill_s: float
    memory_mib: float
    cache_fill_s: float
    cache_mib: float


def fill_ledgers(n: int, probes: int, now: dt.datetime) -> FilledLedgers:
    """An in-memory ledger and a ``BigQueryLedger`` cache, each holding ``n`` records.

    The in-memory ledger is filled through ``record``, the path the handler
    uses, so its index holds all ``n`` keys (appending to ``rows`` alone would
    leave the index empty and time lookups against nothing). The cache is
    sized to hold all ``n`` (production's default holds 10,000), so every
    redelivery is a hit and the figure is the cost of a hit in a cache of
    ``n``. Fill time and memory (this process's RSS growth while filling; all
    sizes stay alive, so no freed memory is reused) say whether a double or
    a cache of that size is practical, which the per-delivery figure does not.
    """
    processed = event_ids(n, seed=f"processed-{n}")
    before, t0 = rss_mib(), time.perf_counter()
    memory = InMemoryLedger()
    for k in processed:
        memory.record(LedgerEntry(k, PROCESSOR, now.date(), now))
    memory_fill, memory_mib = time.perf_counter() - t0, rss_mib() - before
    before, t0 = rss_mib(), time.perf_counter()
    cache = RecentlyProcessed(size=n)
    for k in processed:
        cache.put((k, PROCESSOR), now.date())
    cache_fill, cache_mib = time.perf_counter() - t0, rss_mib() - before
    # A redelivery the cache holds never reaches BigQuery: no client is needed.
    cached = BigQueryLedger(cast(Any, None), cast(Any, None), "bench", cache=cache)
    return FilledLedgers(n, handler_of(memory), handler_of(cached),
                         deliveries(random.Random(n).sample(processed, min(probes, n))),
                         memory_fill, memory_mib, cache_fill, cache_mib)


def growth(sizes: Sequence[int], probes: int = 300, rounds: int = 5) -> list[dict[str, Any]]:
    """Handler µs per delivery with ``n`` records already processed, for each ``n``.

    Every size is filled first, then measured in ``rounds`` interleaved
    rounds (the order rotating), ``probes`` new events and ``probes``
    redeliveries per size per round, and the median round reported: what
    else the machine does then falls on every size alike instead of on
    whichever was measured at a bad moment. A warm-up first, so that the
    first size does not pay for the handler's first calls.
    """
    now = dt.datetime.now(dt.UTC)
    handler_us(handler_of(InMemoryLedger()), deliveries(event_ids(probes, seed="warmup")),
               "processed")
    filled = []
    for n in sizes:
        filled.append(fill_ledgers(n, probes, now))
        console.print(f"  {n:,} records: in-memory ledger filled in "
                      f"{filled[-1].memory_fill_s:.1f} s, cache in {filled[-1].cache_fill_s:.1f} s")
    new: dict[int, list[float]] = {f.records: [] for f in filled}
    again: dict[int, list[float]] = {f.records: [] for f in filled}
    for r in range(rounds):
        for f in filled[r % len(filled):] + filled[:r % len(filled)]:
            bodies = deliveries(event_ids(probes, seed=f"new-{f.records}-{r}"))
            new[f.records].append(handler_us(f.memory, bodies, "processed"))
            again[f.records].append(handler_us(f.cached, f.redeliveries, "duplicate"))
    return [{"records": f.records, "new_event_memory_ledger_us": statistics.median(new[f.records]),
             "redelivery_bigquery_cache_us": statistics.median(again[f.records]),
             "new_event_memory_ledger_rounds_us": new[f.records],
             "redelivery_bigquery_cache_rounds_us": again[f.records],
             "memory_ledger_fill_s": f.memory_fill_s, "memory_ledger_mib": f.memory_mib,
             "cache_fill_s": f.cache_fill_s, "cache_mib": f.cache_mib} for f in filled]


def run(sizes: Sequence[int] = LEDGER_SIZES, probes: int = LOOKUP_PROBES,
        bigquery: bool = True) -> dict[str, Any]:
    """Both growth tables; the BigQuery one only with ``bigquery``."""
    result: dict[str, Any] = {"date": dt.date.today().isoformat(),
                              "machine": machine_info(memory_digits=1)}
    console.print(f"handler alone, as the ledger grows ({', '.join(f'{n:,}' for n in sizes)}"
                  f" records) ...")
    result["growth"] = growth(sizes)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if bigquery:
        with emulated_bigquery() as (bq, wiring):
            console.print("BigQuery ledger lookups on bqemulator, as the table grows ...")
            result["lookup_growth"] = lookup_growth(bq, wiring, sizes, probes)
    return result


def report_growth(result: dict[str, Any]) -> None:
    grown = Table(title="Handler.respond alone (µs per delivery, median of interleaved rounds) "
                        "as the ledger grows",
                  caption="The cache is sized to hold every record (production's default "
                          "holds 10,000). MiB: RSS growth while filling.")
    for col in ("records", "new event, in-memory ledger (indexed)",
                "redelivery, BigQueryLedger cache", "ledger fill s", "ledger MiB",
                "cache fill s", "cache MiB"):
        grown.add_column(col, justify="right")
    for g in result["growth"]:
        grown.add_row(f"{g['records']:,}", f"{g['new_event_memory_ledger_us']:,.0f}",
                      f"{g['redelivery_bigquery_cache_us']:,.0f}",
                      f"{g['memory_ledger_fill_s']:.2f}", f"{g['memory_ledger_mib']:,.0f}",
                      f"{g['cache_fill_s']:.2f}", f"{g['cache_mib']:,.0f}")
    console.print(grown)
    console.print(f"peak RSS of the benchmark process: {result['peak_rss_mib']:,.0f} MiB")


def report(result: dict[str, Any]) -> None:
    report_growth(result)
    if lookups := result.get("lookup_growth"):
        report_lookup_growth(lookups)


def main(sizes: Sequence[int] = LEDGER_SIZES, probes: int = LOOKUP_PROBES,
         bigquery: bool = True, out: Path | None = None) -> dict[str, Any]:
    """Run, write the JSON to ``out`` (if given), print the tables; ``benchmarks.run``
    calls this with ``(sizes, probes, out=...)``."""
    return save_and_report(run(sizes, probes, bigquery), out, report)


@click.command()
@click.option("--sizes", callback=sizes_callback(MIN_SIZE), show_default=True,
              default=",".join(str(n) for n in LEDGER_SIZES),
              help="Ledger sizes for both growth tables, comma-separated.")
@click.option("--probes", type=click.IntRange(5, 1000), default=LOOKUP_PROBES,
              show_default=True, help="Lookups timed per kind and size on bqemulator.")
@click.option("--bigquery/--no-bigquery", default=True, show_default=True,
              help="Also time the BigQuery lookups on bqemulator.")
@click.option("--out", type=click.Path(path_type=Path),
              default=ROOT / "bench-results" / "process-growth.json",
              help="JSON output [default: bench-results/process-growth.json].")
def cli(sizes: tuple[int, ...], probes: int, bigquery: bool, out: Path) -> None:
    """The handler and the BigQuery lookup as the ledger grows."""
    main(sizes, probes, bigquery, out)


if __name__ == "__main__":
    cli()

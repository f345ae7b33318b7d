"""``BigQueryLedger.seen`` timed on bqemulator: at a fixed 1,000 records
(:func:`bigquery_lookup`) and as the ledger table grows (:func:`lookup_growth`).

The BigQuery lookup (one query per uncached delivery) is what a new event
waits for in production. As the table grows, ``seen`` is timed for a new event
and for a processed one the cache does not hold, with the query jobs each
lookup ran (counted by the emulator) and the partitions its filter admits.
bqemulator keeps each table in one DuckDB table: it has no partitions to
prune, so what it shows is DuckDB's cost, not BigQuery's. Two diagnostics show
how much the emulator's figure depends on the rows being stored in date order:
the same lookup without its date filter, and a table of the largest size
stored in random order (see :func:`lookup_growth`).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from google.cloud import bigquery
from rich.table import Table

from benchmarks.bench_io import rss_mib, wide_console
from benchmarks.ledger_table import (
    FILL_COMPARE_ROWS,
    LEDGER_DAYS,
    LEDGER_PROCESSORS,
    LedgerTable,
    Probe,
    fill_comparison,
    fill_table,
)
from benchmarks.process_apps import PROCESSOR
from outbox.bigquery_sql import Param, Statement
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator
from outbox.schema import TableSpec
from outbox.wiring import Wiring
from processors.dedupe import (
    PROCESSED_EVENTS,
    BigQueryLedger,
    LedgerEntry,
    run_query,
    seen_statement,
)

console = wide_console(160, honour_columns=True)
LOOKUP_PROBES = 60
"""Lookups timed per kind and size (the median is reported)."""
LOOKUP_ROUNDS = 6
"""Interleaved rounds the lookups are spread over."""
LOOKUP_WARMUP = 3
"""Untimed lookups per kind and size, first: a table's first queries cost more."""
KINDS = ("new_event", "processed_uncached", "new_event_no_date_filter")
"""What is timed against each table: ``seen`` for a new event and for a processed
one the cache does not hold, and the new event's query without its date filter."""


def bigquery_lookup(bq: BigQueryEmulator, wiring: Wiring, samples: int = 30) -> dict[str, float]:
    """Milliseconds of ``BigQueryLedger.seen`` on bqemulator: uncached miss, uncached
    hit (one query each), and a cached hit (none), against 1,000 records of one day."""
    spec = PROCESSED_EVENTS.with_location(f"bench_{uuid.uuid4().hex[:8]}")
    ensure_tables(wiring.bigquery, bq.project, [spec])
    now = dt.datetime.now(dt.UTC)
    known = [f"known{i:05d}" for i in range(1000)]
    wiring.appender.append(spec, [
        LedgerEntry(k, PROCESSOR, now.date(), now).row(spec) for k in known])

    def timed(ids: Sequence[str], ledger: Callable[[], BigQueryLedger], expect: bool) -> float:
        times = []
        for eid in ids:
            led = ledger()
            t0 = time.perf_counter()
            if led.seen(eid, PROCESSOR, now.date()) is not expect:
                raise SystemExit(f"lookup of {eid}: expected {expect}")
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    def cold() -> BigQueryLedger:
        return BigQueryLedger(wiring.bigquery, wiring.appender, bq.project, spec)

    warm = cold()
    for k in known[:samples]:
        warm.seen(k, PROCESSOR, now.date())
    return {
        "miss_ms": timed([f"new{i:05d}" for i in range(samples)], cold, False),
        "hit_uncached_ms": timed(known[samples:2 * samples], cold, True),
        "hit_cached_ms": timed(known[:samples], lambda: warm, True),
    }


def admitted(stmt: Statement, partitions: dict[dt.date, int]) -> tuple[int, int]:
    """(partitions, rows) that ``stmt``'s ``event_date BETWEEN @lo AND @hi`` admits."""
    lo, hi = stmt.param("lo"), stmt.param("hi")
    inside = [rows for day, rows in partitions.items() if lo <= day <= hi]
    return len(inside), sum(inside)


def query_jobs(client: bigquery.Client) -> int:
    """Query jobs the project has run so far, as the server counts them.

    bqemulator's jobs.list pages nothing and ignores ``minCreationTime``:
    one call with a large ``maxResults`` returns every job.
    """
    return sum(1 for job in client.list_jobs(max_results=1_000_000, page_size=1_000_000)
               if job.job_type == "query")


def lookup(wiring: Wiring, project: str, spec: TableSpec, probe: Probe, expect: bool) -> float:
    """Seconds of one ``BigQueryLedger.seen``, on a fresh ledger so the cache never answers."""
    ledger = BigQueryLedger(wiring.bigquery, wiring.appender, project, spec)
    t0 = time.perf_counter()
    got = ledger.seen(probe[0], PROCESSOR, probe[1])
    took = time.perf_counter() - t0
    if got is not expect:
        raise SystemExit(f"lookup of {probe} in {spec.name}: expected {expect}")
    if ledger.queries != 1:
        raise SystemExit(f"lookup of {probe}: {ledger.queries} queries, expected 1")
    return took


def query(client: bigquery.Client, stmt: Statement) -> float:
    """Seconds of one ``run_query``, the function ``seen`` runs its statement with."""
    t0 = time.perf_counter()
    run_query(client, stmt, "diagnostic query")
    return time.perf_counter() - t0


def _p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def _summary(seconds: Sequence[float], jobs: int) -> dict[str, float]:
    return {"ms": statistics.median(seconds) * 1000, "p90_ms": _p90(seconds) * 1000,
            "jobs_per_lookup": jobs / len(seconds)}


def lookup_growth(bq: BigQueryEmulator, wiring: Wiring, sizes: Sequence[int],
                  probes: int = LOOKUP_PROBES, rounds: int = LOOKUP_ROUNDS,
                  compare_fill: bool = True, shuffled_check: bool = True) -> dict[str, Any]:
    """``BigQueryLedger.seen`` on bqemulator against a ledger table of each size.

    Per size a ``processed_events`` table (the production spec: partitioned
    by ``event_date``, clustered by processor and id) filled by one load job.
    Then, interleaved over ``rounds`` rounds with the order of the tables
    rotating (the machine is shared; its other load then falls on every size
    alike), ``probes`` lookups per kind and size: a new event, a processed
    one the cache does not hold, and the new event's query without its date
    filter; and as many queries that read no table, the emulator's fixed cost
    per query job. Every probe is distinct, so bqemulator's result cache
    (keyed by SQL and parameters) never answers. Query jobs are counted by
    the server (jobs.list) around every batch, and each ``seen`` is checked to
    have run exactly one query by the ledger's own count.

    What carries over to BigQuery and what does not: the SQL, one job per
    uncached lookup and the partitions its filter admits (five of
    :data:`LEDGER_DAYS`, so about 5/90 of the rows, of which clustering then
    lets BigQuery read only the blocks that can hold the processor and id)
    are properties of the query and the table's spec, and hold there. The
    milliseconds are bqemulator's: it keeps the table as one DuckDB table and
    prunes no partition, so whatever it skips, it skips by DuckDB's row-group
    min/max statistics, which depend on the order the rows were stored in.
    Two diagnostics separate that: the unfiltered query (the cost of reading
    everything), and with ``shuffled_check`` one more table of the largest
    size whose records are stored in random order, where DuckDB can skip
    nothing although the query and the table's spec are the same (on
    BigQuery, storage order does not change which partitions are read).
    BigQuery's own latency per query job is not measured here.

    A processed event costs one HTTP request more than a new one, here as
    on BigQuery: after the job, google-cloud-bigquery fetches the page of
    rows with a second getQueryResults, which it skips when the job reports
    none (traced on bqemulator: jobs.insert and one getQueryResults for a
    new event, one more for a processed one).
    """
    client, project = wiring.bigquery, bq.project
    dataset = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"days": LEDGER_DAYS, "probes": probes, "rounds": rounds,
                              "warmup": LOOKUP_WARMUP, "processors": list(LEDGER_PROCESSORS),
                              "sizes": []}
    if compare_fill:
        n = min(FILL_COMPARE_ROWS, max(sizes))
        console.print(f"  fill: {n:,} records by load job and by Storage Write appends ...")
        result["fill_comparison"] = fill_comparison(bq, wiring, dataset, n)
    today = dt.datetime.now(dt.UTC).date()
    tables = []
    for n, shuffled in [(n, False) for n in sizes] + [(max(sizes), True)] * shuffled_check:
        tables.append(fill_table(bq, wiring, dataset, n, LOOKUP_WARMUP + probes, today, shuffled))
        console.print(f"  {n:,} records{' in random order' if shuffled else ''}: built in "
                      f"{tables[-1].build_s:.2f} s, loaded in {tables[-1].load_s:.2f} s, "
                      f"{len(tables[-1].partitions)} partitions")
    result["emulator_rss_mib"] = rss_mib(bq.pid)

    def batch(t: LedgerTable, kind: str, items: slice) -> list[float]:
        if kind == "new_event":
            return [lookup(wiring, project, t.spec, p, False) for p in t.new[items]]
        if kind == "processed_uncached":
            return [lookup(wiring, project, t.spec, p, True) for p in t.old[items]]
        return [query(client, stmt) for stmt in t.unfiltered[items]]

    for t in tables:  # a table's first queries cost more
        for kind in KINDS:
            batch(t, kind, slice(0, LOOKUP_WARMUP))
    console.print(f"  timing {probes} lookups per kind and size in {rounds} interleaved "
                  f"rounds ...")
    seconds: dict[tuple[int, str], list[float]] = {}  # by (table index, kind)
    jobs: Counter[tuple[int, str]] = Counter()
    fixed: list[float] = []
    for r in range(rounds):
        share = slice(LOOKUP_WARMUP + r, None, rounds)
        count = len(range(LOOKUP_WARMUP + probes)[share])
        fixed += [query(client, Statement("SELECT @x AS x", (Param("x", "STRING", f"{r}-{i}"),)))
                  for i in range(count)]
        for i in [*range(len(tables))][r % len(tables):] + [*range(len(tables))][:r % len(tables)]:
            for kind in KINDS:
                before = query_jobs(client)
                seconds.setdefault((i, kind), []).extend(batch(tables[i], kind, share))
                jobs[i, kind] += query_jobs(client) - before
    result["fixed_query_ms"] = statistics.median(fixed) * 1000
    for i, t in enumerate(tables):
        admits = [admitted(seen_statement(project, t.spec, eid, PROCESSOR, day), t.partitions)
                  for eid, day in t.new + t.old]
        result["sizes"].append({
            "records": t.records, "order": "random" if t.shuffled else "event_date",
            "build_s": t.build_s, "load_s": t.load_s,
            "partitions": len(t.partitions),
            "admitted_partitions": max(a[0] for a in admits),
            "admitted_partitions_min": min(a[0] for a in admits),
            "admitted_rows_median": statistics.median(a[1] for a in admits),
            **{kind: _summary(seconds[i, kind], jobs[i, kind])
               for kind in KINDS},
        })
        client.delete_table(f"{project}.{t.spec.dataset}.{t.spec.name}")
    return result


def report_lookup_growth(lg: dict[str, Any]) -> None:
    table = Table(
        title=f"BigQueryLedger.seen on bqemulator as the ledger table grows (median of "
              f"{lg['probes']} lookups in {lg['rounds']} interleaved rounds, each with an "
              f"empty cache)",
        caption=f"Records over {lg['days']} days of event_date, stored in date order unless "
                f"marked. "
                f"Admitted: partitions (and rows, median) the lookup's event_date filter "
                f"lets through. Jobs: query jobs the emulator ran per lookup. No date filter: "
                f"the same lookup for a new event without the partition filter (diagnostic).")
    for col in ("records", "partitions", "admitted", "admitted rows", "load s", "new event ms",
                "processed, uncached ms", "jobs / lookup", "no date filter ms"):
        table.add_column(col, justify="right")
    for r in lg["sizes"]:
        jobs = {r["new_event"]["jobs_per_lookup"], r["processed_uncached"]["jobs_per_lookup"]}
        spread = sorted({r["admitted_partitions_min"], r["admitted_partitions"]})
        label = f"{r['records']:,}" + (" (random order)" if r["order"] == "random" else "")
        table.add_row(label, str(r["partitions"]), "-".join(map(str, spread)),
                      f"{r['admitted_rows_median']:,.0f}", f"{r['load_s']:.2f}",
                      f"{r['new_event']['ms']:.1f}", f"{r['processed_uncached']['ms']:.1f}",
                      " / ".join(f"{j:g}" for j in sorted(jobs)),
                      f"{r['new_event_no_date_filter']['ms']:.1f}")
    console.print(table)
    console.print(f"a query job that reads no table costs {lg['fixed_query_ms']:.1f} ms on the "
                  f"emulator (median, interleaved with the above); the emulator's RSS with every "
                  f"table loaded: {lg['emulator_rss_mib']:,.0f} MiB")
    sizes = [r for r in lg["sizes"] if r["order"] != "random"]
    if len(sizes) > 1:
        lo, hi, fixed = sizes[0], sizes[-1], lg["fixed_query_ms"]
        grew = {kind: (lo[kind]["ms"], hi[kind]["ms"]) for kind in KINDS}
        console.print(
            f"{lo['records']:,} -> {hi['records']:,} records (date order): "
            + ", ".join(f"{kind.replace('_', ' ')} x{b / a:.2f} ({a - fixed:+.1f} -> "
                        f"{b - fixed:+.1f} ms above the fixed cost)"
                        for kind, (a, b) in grew.items()))
    if fill := lg.get("fill_comparison"):
        console.print(f"filling {fill['records']:,.0f} records: one load job (Parquet) "
                      f"{fill['load_job_s']:.2f} s, Storage Write appends of "
                      f"{fill['append_chunk']:,.0f} rows {fill['storage_write_s']:.2f} s")

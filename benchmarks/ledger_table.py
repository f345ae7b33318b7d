"""``processed_events`` tables of a given size on bqemulator, and the lookups
prepared against them, for :mod:`benchmarks.ledger_lookup`.

A table per size, filled by one Parquet load job (:mod:`benchmarks.bq_fill`)
with records spread over :data:`LEDGER_DAYS` days of ``event_date`` in the
order production appends them, or for a diagnostic in random order.
:func:`fill_comparison` is the measurement behind choosing the load job over
Storage Write appends.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from benchmarks.bq_fill import load_parquet, row_count
from benchmarks.process_apps import PROCESSOR
from outbox.bigquery_sql import Param, Statement
from outbox.bigquery_tables import ensure_tables
from outbox.bigquery_write import RowAppender
from outbox.emulators import BigQueryEmulator
from outbox.schema import TableSpec
from outbox.wiring import Wiring
from processors.dedupe import PROCESSED_EVENTS, run_query, seen_statement
from processors.registry import RULES

LEDGER_DAYS = 90
"""Days of ``event_date`` the ledger table's records are spread over."""
FILL_COMPARE_ROWS = 100_000
"""Records written both ways (load job, Storage Write appends) to pick the fill."""
APPEND_CHUNK = 25_000
"""Rows per Storage Write append in that comparison (~4 MB, under the 10 MB cap; 10,000
was slower on bqemulator, 50,000 no faster)."""
EPOCH = dt.date(1970, 1, 1)
LEDGER_PROCESSORS = tuple(dict.fromkeys(rule.processor for rule in RULES))
"""Records are spread over every shipped processor, as the shared table is."""


def run_id(rng: random.Random) -> str:
    """An id shaped as ``scrapers.run_log.new_execution_id`` makes: 16 random hex digits.

    Random, not a counter: a counter sorts, and DuckDB (under bqemulator)
    would then skip row groups by their min/max id, a shortcut no real ledger
    of random ids offers.
    """
    return f"{rng.getrandbits(64):016x}"


def ledger_records(n: int, last_day: dt.date, seed: str, shuffled: bool = False) -> pa.Table:
    """``n`` processed-event records over the :data:`LEDGER_DAYS` days ending ``last_day``.

    In the order production appends them: by ``event_date`` (events are
    processed as they happen), processors interleaved, ids random; or, with
    ``shuffled``, in random order (which BigQuery does not care about and
    DuckDB does: see :func:`benchmarks.ledger_lookup.lookup_growth`). Every
    column is filled, as the service fills it, so a scan reads rows as wide
    as real ones. Columnar (Arrow) because building a million Python row
    dicts would take longer than the load itself.
    """
    rng = random.Random(seed)
    first = (last_day - EPOCH).days - (LEDGER_DAYS - 1)
    days = [first + i * LEDGER_DAYS // n for i in range(n)]
    iso = {d: (EPOCH + dt.timedelta(days=d)).isoformat() for d in set(days)}
    ids = [run_id(rng) for _ in range(n)]
    processors = [LEDGER_PROCESSORS[i % len(LEDGER_PROCESSORS)] for i in range(n)]
    micros = [d * 86_400_000_000 + rng.randrange(86_400_000_000) for d in days]
    spec = PROCESSED_EVENTS
    required = {c.name for c in spec.columns if c.required}
    types = {"STRING": pa.string(), "DATE": pa.date32(), "TIMESTAMP": pa.timestamp("us", "UTC")}
    schema = pa.schema([pa.field(c.name, types[c.type], nullable=c.name not in required)
                        for c in spec.columns])
    columns: dict[str, Any] = {
        "execution_id": ids,
        "processor": processors,
        "event_date": pa.array(days, pa.int32()).cast(pa.date32()),
        "processed_at": pa.array(micros, pa.int64()).cast(pa.timestamp("us", "UTC")),
        "run_id": [run_id(rng) for _ in range(n)],
        "status": ["success"] * n,
        "trigger_source": ["pubsub"] * n,
        "message_id": [str(10**15 + i) for i in range(n)],
        "gcs_path": [f"gs://nba-scraped-data/ball-dont-lie/games/{iso[d]}/{k}.json"
                     for d, k in zip(days, ids, strict=True)],
    }
    table = pa.table({name: pa.array(columns[name], schema.field(name).type)
                      for name in schema.names}, schema=schema)
    if shuffled:
        order = list(range(n))
        rng.shuffle(order)
        table = table.take(pa.array(order))
    return table


def append_fill(appender: RowAppender, spec: TableSpec, records: pa.Table,
                chunk: int = APPEND_CHUNK) -> float:
    """Seconds to append ``records`` through the Storage Write API, ``chunk`` rows a call.

    The path production records through, in bulk; on bqemulator each append
    also copies the whole table into a time-travel snapshot, so its cost
    grows with the table.
    """
    t0 = time.perf_counter()
    for start in range(0, records.num_rows, chunk):
        appender.append(spec, records.slice(start, chunk).to_pylist())
    return time.perf_counter() - t0


def fill_comparison(bq: BigQueryEmulator, wiring: Wiring, dataset: str,
                    n: int = FILL_COMPARE_ROWS) -> dict[str, float]:
    """The same ``n`` records into two empty tables, by load job and by appends."""
    records = ledger_records(n, dt.datetime.now(dt.UTC).date(), seed="fill")
    by_load = PROCESSED_EVENTS.with_location(dataset, "fill_by_load")
    by_append = PROCESSED_EVENTS.with_location(dataset, "fill_by_append")
    ensure_tables(wiring.bigquery, bq.project, [by_load, by_append])
    out = {"records": float(n),
           "load_job_s": load_parquet(wiring.bigquery, bq.project, by_load, records),
           "storage_write_s": append_fill(wiring.appender, by_append, records),
           "append_chunk": float(APPEND_CHUNK)}
    for spec in (by_load, by_append):
        if (got := row_count(wiring.bigquery, bq.project, spec)) != n:
            raise SystemExit(f"{spec.name}: {got} rows after the fill, expected {n}")
        wiring.bigquery.delete_table(f"{bq.project}.{spec.dataset}.{spec.name}")
    return out


def table_partitions(client: bigquery.Client, project: str, spec: TableSpec) -> dict[dt.date, int]:
    """Rows per daily partition, from ``INFORMATION_SCHEMA.PARTITIONS`` (as on BigQuery)."""
    stmt = Statement(
        f"SELECT partition_id, total_rows "
        f"FROM `{project}.{spec.dataset}.INFORMATION_SCHEMA.PARTITIONS` "
        f"WHERE table_name = @table", (Param("table", "STRING", spec.name),))
    return {dt.datetime.strptime(r["partition_id"], "%Y%m%d").date(): int(r["total_rows"])
            for r in run_query(client, stmt, "list partitions")
            if str(r["partition_id"]).isdigit()}


def unfiltered_statement(project: str, spec: TableSpec, execution_id: str,
                         processor: str) -> Statement:
    """``seen_statement`` without its partition filter, a diagnostic only.

    What every lookup would cost if nothing skipped rows by date: on
    bqemulator a scan of the whole table, on BigQuery a scan of every
    partition (billed as such). Built from the real statement, so that it
    cannot drift from it silently.
    """
    stmt = seen_statement(project, spec, execution_id, processor, EPOCH)
    clause = f"WHERE {spec.partition_column} BETWEEN @lo AND @hi\n  AND "
    if clause not in stmt.sql:
        raise SystemExit("seen_statement changed shape: update unfiltered_statement")
    return Statement(stmt.sql.replace(clause, "WHERE "),
                     tuple(p for p in stmt.params if p.name not in ("lo", "hi")))


Probe = tuple[str, dt.date]
"""(execution_id, event_date) of one lookup."""


@dataclass
class LedgerTable:
    """One filled ledger table and the lookups prepared against it."""

    records: int
    shuffled: bool
    spec: TableSpec
    build_s: float
    load_s: float
    partitions: dict[dt.date, int]
    new: list[Probe]
    old: list[Probe]
    unfiltered: list[Statement]


def fill_table(bq: BigQueryEmulator, wiring: Wiring, dataset: str, n: int, count: int,
               today: dt.date, shuffled: bool = False) -> LedgerTable:
    """A ``processed_events`` table of ``n`` records, and ``count`` probes of each kind.

    Probe dates lie at least two days inside the filled range, so that the
    lookup's five days all hold records; processed probes are records of
    :data:`~benchmarks.process_apps.PROCESSOR` looked up under their own event
    date, as a redelivery is.
    """
    client, project = wiring.bigquery, bq.project
    spec = PROCESSED_EVENTS.with_location(
        dataset, f"processed_events_{n}{'_shuffled' if shuffled else ''}")
    ensure_tables(client, project, [spec])
    t0 = time.perf_counter()
    records = ledger_records(n, today, seed=f"ledger-{n}", shuffled=shuffled)
    build_s = time.perf_counter() - t0
    load_s = load_parquet(client, project, spec, records)
    if (got := row_count(client, project, spec)) != n:
        raise SystemExit(f"{spec.name}: {got} rows after the load, expected {n}")
    partitions = table_partitions(client, project, spec)
    rng = random.Random(n)
    inner = [min(partitions) + dt.timedelta(days=d) for d in range(2, LEDGER_DAYS - 2)]
    inside = set(inner)
    ids, days = records.column("execution_id"), records.column("event_date").to_pylist()
    mine = [i for i, p in enumerate(records.column("processor").to_pylist())
            if p == PROCESSOR and days[i] in inside]
    return LedgerTable(
        n, shuffled, spec, build_s, load_s, partitions,
        new=[(run_id(rng), rng.choice(inner)) for _ in range(count)],
        old=[(ids[i].as_py(), days[i]) for i in rng.sample(mine, count)],
        unfiltered=[unfiltered_statement(project, spec, run_id(rng), PROCESSOR)
                    for _ in range(count)])

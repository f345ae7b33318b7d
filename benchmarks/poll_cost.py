"""Poll cost as the log grows (issue 7, part 3): ``python -m benchmarks.poll_cost``.

BigQuery bills a poll by the partitions it admits and by the jobs it runs, so
a relay whose poll cost grew with the table would get dearer every day until
the 90-day expiry caught up. This fills the log with 90 days of history at
several sizes and measures what one relay run costs on each:

- query/DML jobs (``store.stats`` plus ``lease.jobs``) and Storage Read
  sessions per run;
- rows each read session returned (log and journal separately);
- partitions the run's restriction (``triggered_at >= since``) admits, counted
  from the table by a separate metadata query that is not part of the run,
  next to the partitions the table has;
- wall time, reported but not headlined: it is the emulator's DuckDB speed,
  not BigQuery's.

Three runs per size, on one relay (as a Cloud Run instance would run them):
the *sweep* (a fresh relay's first run reads ``sweep_lookback``, 90 days),
then a *normal* run (``lookback``, 3 days) and an *idle* normal run with
nothing pending, the poll that happens most often. Each of the first two
publishes ``pending`` fresh rows through a real ``PubSubPublisher`` on the
Pub/Sub emulator.

History is what a drained outbox leaves behind: log rows with
``published = TRUE`` spread evenly over the last 90 days, and the journal
rows the relay appended when it published them (one row per relay tick of
``RELAY_TICK`` holding that tick's ids). Without the journal history the
benchmark would flatter the relay: every run's journal read returns every
journal row of its window.

Filling: one Parquet load job per table (:mod:`benchmarks.bq_fill`, which
says why), of the history built in :mod:`benchmarks.poll_history`.

bqemulator reports no bytes: a dry run of the poll's SQL reports
``totalBytesProcessed = 0`` whatever the table holds. That the SQL and the
read restrictions filter on the partition column is shown by parsing them
(``tests/test_sql_and_messages.py``, ``tests/test_poll_cost_sql.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from rich.table import Table

from benchmarks.bench_io import machine_info, save_and_report, sizes_callback, wide_console
from benchmarks.bq_fill import emulator_settings, load_parquet, row_count
from benchmarks.poll_history import HISTORY, RELAY_TICK, history_journal, history_log, pending_rows
from benchmarks.poll_recorders import CountingReader, RecordingStore
from outbox import bigquery_sql as sqlgen
from outbox.bigquery_lease import BigQueryLease
from outbox.bigquery_store import query_params
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.pubsub_admin import ensure_topics
from outbox.pubsub_publisher import PubSubPublisher
from outbox.routes import SCRAPER_COMPLETE, Route
from outbox.schema import (
    OUTBOX_JOURNAL,
    OUTBOX_LEASE,
    OUTBOX_RUNS,
    SCRAPER_EXECUTION_LOG,
    TableSpec,
)
from outbox.wiring import Wiring
from relay import Relay, RelayConfig

# Wide when piped, so the table stays readable in logs and CI output.
console = wide_console(200)
PROJECT = "bench-project"
CONFIG = RelayConfig(
    lookback=dt.timedelta(days=3),
    sweep_lookback=dt.timedelta(days=90),
    sweep_every=dt.timedelta(hours=6),
    # Generous, so that a slow emulator read shows up as seconds, not as an
    # undrained run; the production default is 50 s.
    deadline=dt.timedelta(minutes=30),
)


@dataclass
class _Table:
    spec: TableSpec
    client: bigquery.Client

    @property
    def ref(self) -> str:
        return f"`{PROJECT}.{self.spec.dataset}.{self.spec.name}`"

    def partitions(self, since: dt.datetime | None = None) -> int:
        """Distinct ``DATE(triggered_at)`` partitions, all or those a
        ``triggered_at >= since`` restriction admits (pruning is per day, so
        since's own day counts). A metadata query, outside any measured run."""
        part = self.spec.partition_column
        where = f"DATE({part}) >= DATE(@since)" if since else "TRUE"
        params = [bigquery.ScalarQueryParameter("since", "TIMESTAMP", since)] if since else []
        sql = f"SELECT COUNT(DISTINCT DATE({part})) AS n FROM {self.ref} WHERE {where}"
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        return int(next(iter(job.result()))["n"])

    def rows(self) -> int:
        return row_count(self.client, PROJECT, self.spec)


@dataclass
class _Run:
    kind: str
    since: dt.datetime
    lookback_days: float
    jobs: int
    store_jobs: int
    lease_jobs: int
    appends: int
    read_sessions: int
    log_rows_read: int
    journal_rows_read: int
    journal_ids_read: int
    published: int
    folded: int
    stopped: str
    seconds: float
    poll_seconds: float
    """Polls of the run: the snapshot (two read sessions) and its pages."""
    fold_seconds: float
    log_partitions_admitted: int = 0
    journal_partitions_admitted: int = 0
    restrictions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["since"] = self.since.isoformat()
        return out


class PollCost:
    def __init__(self, bq: BigQueryEmulator, ps: PubSubEmulator) -> None:
        self.wiring = Wiring.build(emulator_settings(bq, ps))
        assert self.wiring.reader is not None  # storage-read is the default read mode
        self.reader = CountingReader(self.wiring.reader.client, PROJECT)

    def measure(self, size: int, pending: int, journal_history: bool = True) -> dict[str, Any]:
        client = self.wiring.bigquery
        dataset = f"pollcost_{uuid.uuid4().hex[:8]}"
        log_spec = SCRAPER_EXECUTION_LOG.with_location(dataset)
        journal_spec = OUTBOX_JOURNAL.with_location(dataset)
        lease_spec = OUTBOX_LEASE.with_location(dataset)
        ensure_tables(client, PROJECT, [log_spec, journal_spec,
                                        OUTBOX_RUNS.with_location(dataset), lease_spec])
        route = Route(SCRAPER_COMPLETE.name, log_spec, f"pollcost-{dataset}",
                      SCRAPER_COMPLETE.encoder, SCRAPER_COMPLETE.columns)
        store = RecordingStore(client, self.wiring.appender, log_spec, route.name, journal_spec,
                               project=PROJECT, columns=route.columns, reader=self.reader)
        log, journal = _Table(log_spec, client), _Table(journal_spec, client)

        now = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        history = history_log(size, now)
        journal_rows = history_journal(history, route.name) if journal_history else None
        generate_s = time.perf_counter() - t0
        load_s = load_parquet(client, PROJECT, log_spec, history)
        if journal_rows is not None:
            load_s += load_parquet(client, PROJECT, journal_spec, journal_rows)
        console.print(f"size {size:,}: generated in {generate_s:.1f} s, loaded "
                      f"{history.num_rows:,} log + "
                      f"{journal_rows.num_rows if journal_rows else 0:,} journal rows "
                      f"in {load_s:.1f} s")
        del history, journal_rows

        ensure_topics(PROJECT, [route.topic])
        publisher = PubSubPublisher(PROJECT)
        lease = BigQueryLease(client, PROJECT, lease_spec)
        relay = Relay(route, store, publisher, CONFIG, lease)
        runs: dict[str, _Run] = {}
        try:
            store.append(pending_rows(pending, dt.datetime.now(dt.UTC), "pa"))
            runs["sweep"] = self._run("sweep", relay, store, lease, pending)
            store.append(pending_rows(pending, dt.datetime.now(dt.UTC), "pb"))
            runs["normal"] = self._run("normal", relay, store, lease, pending)
            runs["idle"] = self._run("idle", relay, store, lease, 0)
        finally:
            publisher.close()
        for r in runs.values():
            r.log_partitions_admitted = log.partitions(r.since)
            r.journal_partitions_admitted = journal.partitions(r.since)
        result = {
            "size": size,
            "pending": pending,
            "log_rows": log.rows(),
            "journal_rows": journal.rows(),
            "log_partitions": log.partitions(),
            "journal_partitions": journal.partitions(),
            "fill": {"generate_seconds": round(generate_s, 2), "load_seconds": round(load_s, 2)},
            "dry_run": {k: self._dry_run(log_spec, journal_spec, route.name, r.since)
                        for k, r in runs.items() if k != "idle"},
            "runs": {k: r.as_dict() for k, r in runs.items()},
        }
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        return result

    def _run(self, kind: str, relay: Relay, store: RecordingStore, lease: BigQueryLease,
             expect: int) -> _Run:
        """One measured relay run; the counters are read before and after it."""
        before, lease_jobs = store.stats.snapshot(), lease.jobs
        sessions, reads = self.reader.sessions, len(self.reader.reads)
        polls, poll_s, fold_s = len(store.polled_since), store.poll_seconds, store.fold_seconds
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        summary = relay.run_once()
        seconds = time.perf_counter() - t0
        cost = store.stats.since(before)
        windows = set(store.polled_since[polls:])
        if len(windows) != 1:
            raise SystemExit(f"{kind} run polled {len(windows)} windows: {windows}")
        since = windows.pop()
        lookback = (started - since) / dt.timedelta(days=1)
        want = CONFIG.sweep_lookback if kind == "sweep" else CONFIG.lookback
        if abs(lookback - want / dt.timedelta(days=1)) > 0.01:
            raise SystemExit(f"{kind} run read {lookback:.2f} days, expected {want}")
        if summary.published != expect or summary.stopped != "drained":
            raise SystemExit(f"{kind} run did not publish {expect} rows: {summary.as_dict()}")
        new = self.reader.reads[reads:]
        return _Run(
            kind=kind, since=since, lookback_days=round(lookback, 3),
            jobs=cost.jobs + lease.jobs - lease_jobs, store_jobs=cost.jobs,
            lease_jobs=lease.jobs - lease_jobs, appends=cost.appends,
            read_sessions=self.reader.sessions - sessions,
            log_rows_read=sum(r.rows for r in new if r.table == store.spec.name),
            journal_rows_read=sum(r.rows for r in new if r.table == store.journal.name),
            journal_ids_read=sum(r.ids for r in new if r.table == store.journal.name),
            published=summary.published, folded=summary.folded, stopped=summary.stopped,
            seconds=round(seconds, 3), poll_seconds=round(store.poll_seconds - poll_s, 3),
            fold_seconds=round(store.fold_seconds - fold_s, 3),
            restrictions={r.table: r.restriction for r in new},
        )

    def _dry_run(self, log: TableSpec, journal: TableSpec, route: str,
                 since: dt.datetime) -> dict[str, Any]:
        """What a dry run of the query-mode poll (``bigquery_sql.poll``) says
        it would process. On BigQuery this is the bytes of the admitted
        partitions; bqemulator has no cost model and says 0."""
        stmt = sqlgen.poll(PROJECT, log, journal, route, since, CONFIG.batch_size, None,
                           SCRAPER_COMPLETE.columns)
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False,
                                         query_parameters=query_params(stmt))
        try:
            job = self.wiring.bigquery.query(stmt.sql, job_config=config)
        except gexc.GoogleAPICallError as exc:  # an unsupported dry run is a result
            return {"supported": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"supported": True, "total_bytes_processed": job.total_bytes_processed}


# -- reporting -------------------------------------------------------------------------


def _flat(results: list[dict[str, Any]], kind: str, key: str) -> bool:
    return len({r["runs"][kind][key] for r in results}) == 1


def run(sizes: Sequence[int], pending: int, journal_history: bool = True) -> dict[str, Any]:
    """Start both emulators, measure every size, and return the JSON-ready result.

    ``journal_history=False`` leaves the journal empty, as if the history had
    been drained by something other than this relay: the log side alone.
    """
    with BigQueryEmulator(PROJECT) as bq, PubSubEmulator(PROJECT) as ps:
        bench = PollCost(bq, ps)
        results = [bench.measure(size, pending, journal_history) for size in sizes]
    metrics = ("jobs", "read_sessions", "log_rows_read", "log_partitions_admitted",
               "journal_rows_read", "journal_ids_read", "journal_partitions_admitted")
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine_info(),
        "config": {"lookback_days": CONFIG.lookback / dt.timedelta(days=1),
                   "sweep_lookback_days": CONFIG.sweep_lookback / dt.timedelta(days=1),
                   "batch_size": CONFIG.batch_size, "pending": pending,
                   "history_days": HISTORY / dt.timedelta(days=1),
                   "relay_tick_seconds": RELAY_TICK.total_seconds(),
                   "journal_history": journal_history,
                   "fill": "one Parquet load job per table (client.load_table_from_file)"},
        "flat_across_sizes": {kind: {m: _flat(results, kind, m) for m in metrics}
                              for kind in ("normal", "sweep", "idle")},
        "sizes": results,
    }


def table(result: dict[str, Any]) -> Table:
    """The result as a rich table; cells read normal / sweep (idle in the JSON)."""
    t = Table(title=f"Poll cost as the log grows: one relay run, {result['config']['pending']} "
                    f"pending rows; cells are normal (3 d) / sweep (90 d)",
              caption="The sweep is a relay's first run, which also seeds its lease (+1 job). "
                      "Journal: the rows a drained history left, one per 1-minute relay tick.")
    for col in ("history rows", "partitions in table", "partitions admitted", "query/DML jobs",
                "read sessions", "log rows read", "journal rows read", "journal ids read",
                "run s", "fill s"):
        t.add_column(col, justify="right")
    for r in result["sizes"]:
        n, s = r["runs"]["normal"], r["runs"]["sweep"]

        def pair(key: str, fmt: str = "{:,}", a: dict[str, Any] = n,
                 b: dict[str, Any] = s) -> str:
            return f"{fmt.format(a[key])} / {fmt.format(b[key])}"

        t.add_row(f"{r['size']:,}", str(r["log_partitions"]), pair("log_partitions_admitted"),
                  pair("jobs"), pair("read_sessions"), pair("log_rows_read"),
                  pair("journal_rows_read"), pair("journal_ids_read"),
                  pair("seconds", "{:.2f}"),
                  f"{r['fill']['load_seconds']:.1f}")
    return t


def report(result: dict[str, Any]) -> None:
    """The table, which metrics stayed flat across sizes, and the dry run's verdict."""
    console.print(table(result))
    sizes_done = result["sizes"]
    for kind, checks in result["flat_across_sizes"].items():
        if len(sizes_done) < 2:
            break  # one size: nothing to compare
        flat = [m for m, ok in checks.items() if ok]
        grows = [m + " (" + " -> ".join(f"{r['runs'][kind][m]:,}" for r in sizes_done) + ")"
                 for m, ok in checks.items() if not ok]
        console.print(f"{kind} run: flat in {', '.join(flat) or 'nothing'}"
                      + (f"; [bold red]grows[/] in {'; '.join(grows)}" if grows else ""))
    dry = result["sizes"][-1]["dry_run"]
    console.print(f"dry run of the query-mode poll SQL: {json.dumps(dry)}")


@click.command()
@click.option("--sizes", default="1000,100000,1000000", show_default=True,
              callback=sizes_callback(0),
              help="History sizes (log rows over 90 days), comma-separated.")
@click.option("--pending", type=click.IntRange(1, 10_000), default=200, show_default=True,
              help="Unpublished rows each publishing run drains.")
@click.option("--journal-history/--no-journal-history", default=True, show_default=True,
              help="Also fill the journal the relay would have left while draining the history.")
@click.option("--out", type=click.Path(path_type=Path),
              default=Path("bench-results/poll_cost.json"), show_default=True)
def main(sizes: tuple[int, ...], pending: int, journal_history: bool, out: Path) -> None:
    """Fill the log with 90 days of history per size; count what a relay run costs."""
    save_and_report(run(sizes, pending, journal_history), out, report)
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()

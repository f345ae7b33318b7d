"""``make bench``: the relay against raw Pub/Sub publishing, side by side.

Everything runs on the real emulators (bqemulator and Google's Pub/Sub
emulator), started here on free ports. Figures are ratios measured in the
same run, medians over ``--repeat`` rounds, because the machine is shared and
absolute times are noise.

Reports:
- drain throughput: relay rows/s over raw ``PublisherClient.publish`` (one
  call per message, the way an application publishes) messages/s of the same
  messages (goal for issue 2: >= 0.7); and, for honesty, over the relay's own
  batched Publish RPC path alone, which shows what reading and journaling in
  BigQuery cost;
- BigQuery jobs per batch as the batch size grows (goal: constant).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import click
from google.cloud import pubsub_v1
from rich.console import Console
from rich.table import Table

from outbox.bigquery_lease import BigQueryLease
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.messages import V1_COLUMNS, encode_scraper_complete_v1
from outbox.pubsub_admin import ensure_topics
from outbox.pubsub_publisher import PubSubPublisher
from outbox.routes import Route
from outbox.rows import validate_row
from outbox.samples import scraper_rows
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_LEASE, OUTBOX_RUNS, SCRAPER_EXECUTION_LOG
from outbox.wiring import Settings, Wiring
from relay import Relay, RelayConfig

console = Console()
PROJECT = "bench-project"


class Bench:
    def __init__(self, bq: BigQueryEmulator, ps: PubSubEmulator) -> None:
        os.environ.update(ps.env())
        self.settings = Settings(
            project=PROJECT,
            bigquery_emulator=bq.rest_url.removeprefix("http://"),
            bigquery_emulator_grpc=bq.grpc_endpoint,
            pubsub_emulator=ps.host,
        )
        self.wiring = Wiring.build(self.settings)

    def fresh_store(self, rows: list[dict[str, Any]]) -> BigQueryOutboxStore:
        dataset = f"bench_{uuid.uuid4().hex[:10]}"
        log = SCRAPER_EXECUTION_LOG.with_location(dataset)
        journal = OUTBOX_JOURNAL.with_location(dataset)
        ensure_tables(self.wiring.bigquery, PROJECT,
                      [log, journal, OUTBOX_RUNS.with_location(dataset),
                       OUTBOX_LEASE.with_location(dataset)])
        store = BigQueryOutboxStore(
            self.wiring.bigquery, self.wiring.appender, log, "scrapers", journal,
            columns=V1_COLUMNS, reader=self.wiring.reader,
        )
        for i in range(0, len(rows), 5000):
            store.append(rows[i : i + 5000])
        return store

    def topic(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        ensure_topics(PROJECT, [name])
        return name

    def raw_publish(self, rows: list[dict[str, Any]]) -> float:
        """Seconds for plain google-cloud-pubsub to publish the same messages."""
        topic = self.topic()
        messages = [encode_scraper_complete_v1(validate_row(SCRAPER_EXECUTION_LOG, r))
                    for r in rows]
        client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000)
        )
        path = client.topic_path(PROJECT, topic)
        t0 = time.perf_counter()
        futures = [client.publish(path, m.data, **m.attributes) for m in messages]
        for f in futures:
            f.result()
        seconds = time.perf_counter() - t0
        client.stop()
        return seconds

    def rpc_publish(self, rows: list[dict[str, Any]]) -> float:
        """Seconds for the relay's own publisher (batched Publish RPCs) alone,
        without BigQuery: what the relay would take if reading and journaling
        were free."""
        topic = self.topic()
        messages = [encode_scraper_complete_v1(validate_row(SCRAPER_EXECUTION_LOG, r))
                    for r in rows]
        publisher = PubSubPublisher(PROJECT)
        t0 = time.perf_counter()
        for i in range(0, len(messages), 5000):
            outcomes = publisher.publish(topic, messages[i : i + 5000])
            if not all(o.ok for o in outcomes):
                raise SystemExit("raw RPC publish failed")
        seconds = time.perf_counter() - t0
        publisher.close()
        return seconds

    def relay_drain(self, rows: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
        store = self.fresh_store(rows)
        topic = self.topic()
        route = Route("scrapers", store.spec, topic, encode_scraper_complete_v1)
        publisher = PubSubPublisher(PROJECT)
        lease = BigQueryLease(self.wiring.bigquery, PROJECT,
                              OUTBOX_LEASE.with_location(store.spec.dataset))
        relay = Relay(route, store, publisher, RelayConfig(
            batch_size=batch_size, deadline=dt.timedelta(hours=1)), lease)
        before = store.stats.snapshot()
        sessions = store.reader.sessions if store.reader else 0
        t0 = time.perf_counter()
        summary = relay.run_once()
        seconds = time.perf_counter() - t0
        publisher.close()
        cost = store.stats.since(before)
        jobs = cost.jobs + lease.jobs
        sessions = (store.reader.sessions if store.reader else 0) - sessions
        if summary.published != len(rows) or summary.marked != len(rows):
            raise SystemExit(f"relay did not drain: {summary.as_dict()}")
        return {"seconds": seconds, "jobs": jobs, "batches": summary.batches,
                "appends": cost.appends, "read_sessions": sessions,
                "jobs_per_batch": jobs / max(summary.batches, 1)}


@click.command()
@click.option("--rows", type=click.IntRange(1000), default=50_000, show_default=True)
@click.option("--repeat", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=5000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/latest.json"))
def main(rows: int, repeat: int, batch_size: int, out: Path) -> None:
    """Drain a backlog through both emulators and report ratios."""
    with BigQueryEmulator(PROJECT) as bq, PubSubEmulator(PROJECT) as ps:
        bench = Bench(bq, ps)
        data = scraper_rows(rows, seed=42)
        ratios, rpc_ratios, raw_s, rpc_s, relay_s = [], [], [], [], []
        for i in range(repeat):
            console.print(f"round {i + 1}/{repeat}: raw publish of {rows} messages ...")
            raw = bench.raw_publish(data)
            rpc = bench.rpc_publish(data)
            console.print(f"round {i + 1}/{repeat}: relay drain of {rows} rows ...")
            drained = bench.relay_drain(data, batch_size)
            raw_s.append(raw)
            rpc_s.append(rpc)
            relay_s.append(drained["seconds"])
            ratios.append(raw / drained["seconds"])
            rpc_ratios.append(rpc / drained["seconds"])
        jobs_rows = []
        for size in (100, 500, 1000, 5000):
            n = min(size * 4, rows)
            drained = bench.relay_drain(scraper_rows(n, seed=size), size)
            jobs_rows.append({"batch_size": size, "rows": n, **drained})

    result = {
        "date": dt.date.today().isoformat(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                        * os.sysconf("SC_PHYS_PAGES") / 2**30)},
        "rows": rows,
        "batch_size": batch_size,
        "repeat": repeat,
        "raw_publish_seconds": raw_s,
        "rpc_publish_seconds": rpc_s,
        "relay_seconds": relay_s,
        "throughput_ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "rpc_ratios": rpc_ratios,
        "median_rpc_ratio": statistics.median(rpc_ratios),
        "jobs_per_batch": jobs_rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    table = Table(title=f"Drain of {rows} rows, batch {batch_size}: relay vs raw publishing")
    for col in ("round", "raw client.publish s", "raw msg/s", "publish RPC only s", "relay s",
                "relay rows/s", "ratio vs raw", "ratio vs RPC only"):
        table.add_column(col, justify="right")
    for i, (r, p, d, q, qr) in enumerate(
        zip(raw_s, rpc_s, relay_s, ratios, rpc_ratios, strict=True), 1
    ):
        table.add_row(str(i), f"{r:.2f}", f"{rows / r:,.0f}", f"{p:.2f}", f"{d:.2f}",
                      f"{rows / d:,.0f}", f"{q:.2f}", f"{qr:.2f}")
    table.add_row("median", "", "", "", "", "", f"[bold]{statistics.median(ratios):.2f}[/]",
                  f"{statistics.median(rpc_ratios):.2f}")
    console.print(table)
    jobs = Table(title="BigQuery work per run as the batch grows (one run, 4 batches)")
    for col in ("batch size", "rows", "batches", "query/DML jobs", "jobs/batch",
                "read sessions", "appends"):
        jobs.add_column(col, justify="right")
    for j in jobs_rows:
        jobs.add_row(str(j["batch_size"]), str(j["rows"]), str(j["batches"]), str(j["jobs"]),
                     f"{j['jobs_per_batch']:.2f}", str(j["read_sessions"]), str(j["appends"]))
    console.print(jobs)
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()

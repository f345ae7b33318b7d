"""Drain curves: the relay against raw Pub/Sub publishing, side by side, as the backlog grows.

Everything runs on the real emulators (bqemulator and Google's Pub/Sub
emulator), started here on free ports. Figures are ratios measured in the
same run, medians over rounds, because the machine is shared and absolute
times are noise.

Reports, for each backlog size (``--sizes``, default 10,000, 100,000 and
200,000 rows):

- drain throughput: relay rows/s over raw ``PublisherClient.publish`` (one
  call per message, the way an application publishes) messages/s of the same
  messages (goal for issue 7: >= 0.9 at every size); and, for honesty, over
  the relay's own batched Publish RPC path alone, which shows what reading and
  journaling in BigQuery cost. The relay's time is split into the snapshot
  (its first poll: journal, keys and first chunk), the fold (the one UPDATE at
  the end) and the rest (publishing and journaling, pipelined), so that a
  ratio that falls with the size can be traced;
- peak resident memory of a relay process draining each backlog, measured in
  a fresh interpreter (:mod:`benchmarks.drain_memory`), so that this
  process's copies of the rows and messages do not count (goal: under 250 MB
  and flat as the backlog grows);
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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import click
from google.cloud import pubsub_v1
from rich.console import Console
from rich.table import Table

from benchmarks.drain_memory import Target, run_child
from benchmarks.poll_recorders import RecordingStore
from outbox.bigquery_lease import BigQueryLease
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.messages import V1_COLUMNS, encode_scraper_complete_v1
from outbox.ports import Message
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
DEFAULT_SIZES = (10_000, 100_000, 200_000)
GOAL_RATIO = 0.9
GOAL_RSS_MB = 250.0


@dataclass(frozen=True)
class Round:
    """One round at one size: the same messages three ways."""

    raw_seconds: float
    rpc_seconds: float
    relay_seconds: float
    snapshot_seconds: float
    fold_seconds: float

    @property
    def ratio(self) -> float:
        return self.raw_seconds / self.relay_seconds

    @property
    def rpc_ratio(self) -> float:
        return self.rpc_seconds / self.relay_seconds

    @property
    def ratio_without_fold(self) -> float:
        return self.raw_seconds / max(self.relay_seconds - self.fold_seconds, 1e-9)

    def as_dict(self) -> dict[str, float]:
        return {"raw_publish_seconds": self.raw_seconds, "rpc_publish_seconds": self.rpc_seconds,
                "relay_seconds": self.relay_seconds, "snapshot_seconds": self.snapshot_seconds,
                "fold_seconds": self.fold_seconds, "ratio": self.ratio,
                "rpc_ratio": self.rpc_ratio, "ratio_without_fold": self.ratio_without_fold}


class Bench:
    def __init__(self, bq: BigQueryEmulator, ps: PubSubEmulator) -> None:
        os.environ.update(ps.env())
        self.bq, self.ps = bq, ps
        self.settings = Settings(
            project=PROJECT,
            bigquery_emulator=bq.rest_url.removeprefix("http://"),
            bigquery_emulator_grpc=bq.grpc_endpoint,
            pubsub_emulator=ps.host,
        )
        self.wiring = Wiring.build(self.settings)

    def fresh_store(self, rows: Sequence[dict[str, Any]]) -> RecordingStore:
        """A new dataset holding ``rows`` as pending log rows (appended
        through the Storage Write API, 5,000 at a time, as scrapers would)."""
        dataset = f"bench_{uuid.uuid4().hex[:10]}"
        log = SCRAPER_EXECUTION_LOG.with_location(dataset)
        journal = OUTBOX_JOURNAL.with_location(dataset)
        ensure_tables(self.wiring.bigquery, PROJECT,
                      [log, journal, OUTBOX_RUNS.with_location(dataset),
                       OUTBOX_LEASE.with_location(dataset)])
        store = RecordingStore(
            self.wiring.bigquery, self.wiring.appender, log, "scrapers", journal,
            columns=V1_COLUMNS, reader=self.wiring.reader,
        )
        for i in range(0, len(rows), 5000):
            store.append(rows[i : i + 5000])
        return store

    def drop(self, store: BigQueryOutboxStore) -> None:
        """Free the emulator's copy of a drained backlog: bqemulator keeps
        every dataset in memory, and a run creates a dozen of them."""
        self.wiring.bigquery.delete_dataset(store.spec.dataset, delete_contents=True,
                                            not_found_ok=True)

    def topic(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        ensure_topics(PROJECT, [name])
        return name

    def raw_publish(self, messages: Sequence[Message]) -> float:
        """Seconds for plain google-cloud-pubsub to publish the same messages."""
        topic = self.topic()
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

    def rpc_publish(self, messages: Sequence[Message], batch_size: int) -> float:
        """Seconds for the relay's own publisher (batched Publish RPCs) alone,
        without BigQuery: what the relay would take if reading and journaling
        were free."""
        topic = self.topic()
        publisher = PubSubPublisher(PROJECT)
        t0 = time.perf_counter()
        for i in range(0, len(messages), batch_size):
            outcomes = publisher.publish(topic, messages[i : i + batch_size])
            if not all(o.ok for o in outcomes):
                raise SystemExit("raw RPC publish failed")
        seconds = time.perf_counter() - t0
        publisher.close()
        return seconds

    def relay_drain(self, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
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
        self.drop(store)
        return {"seconds": seconds, "jobs": jobs, "batches": summary.batches,
                "appends": cost.appends, "read_sessions": sessions,
                "jobs_per_batch": jobs / max(summary.batches, 1),
                "snapshot_seconds": store.first_poll_seconds,
                "fold_seconds": store.fold_seconds}

    def relay_memory(self, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
        """Drain ``rows`` in a fresh relay process; its peak resident memory."""
        store = self.fresh_store(rows)
        target = Target(self.bq.rest_url.removeprefix("http://"), self.bq.grpc_endpoint,
                        self.ps.host, store.spec.dataset, self.topic(), batch_size)
        report = run_child(target)
        self.drop(store)
        if report["published"] != len(rows):
            raise SystemExit(f"memory child did not drain: {report}")
        return report


def encode(rows: Sequence[dict[str, Any]]) -> list[Message]:
    """The v1 messages of ``rows``, as the relay encodes them. Bodies are
    copied out of orjson's oversized buffers (see ``relay.cycle._compact``)
    only to keep this process small: the baseline does not pay for it."""
    out = []
    for r in rows:
        m = encode_scraper_complete_v1(validate_row(SCRAPER_EXECUTION_LOG, r))
        out.append(Message(m.key, bytes(memoryview(m.data)), m.attributes))
    return out


def parse_sizes(_ctx: click.Context | None, _param: click.Parameter | None,
                value: str | Sequence[int]) -> tuple[int, ...]:
    """``--sizes 10000,100000`` as a sorted tuple of distinct row counts (each >= 1,000)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        sizes = sorted({int(str(p).replace("_", "").strip()) for p in parts if str(p).strip()})
    except ValueError as exc:
        raise click.BadParameter(f"not a comma-separated list of row counts: {value!r}") from exc
    if not sizes or sizes[0] < 1000:
        raise click.BadParameter("give at least one size, each at least 1000 rows")
    return tuple(sizes)


def parse_optional_sizes(ctx: click.Context | None, param: click.Parameter | None,
                         value: str | None) -> tuple[int, ...] | None:
    return None if value is None else parse_sizes(ctx, param, value)


def machine() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "bqemulator": version("bqemulator"), "google-cloud-pubsub":
            version("google-cloud-pubsub"), "pyarrow": version("pyarrow")}


@click.command()
@click.option("--sizes", default=",".join(map(str, DEFAULT_SIZES)), show_default=True,
              callback=parse_sizes, help="Backlog sizes to drain, comma-separated.")
@click.option("--rows", type=click.IntRange(1000), default=None,
              help="One backlog size; same as --sizes ROWS (the old single-size form).")
@click.option("--repeat", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Rounds per size.")
@click.option("--big-repeat", type=click.IntRange(1, 10), default=None,
              help="Rounds for sizes above 100,000 rows [default: --repeat].")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=5000, show_default=True)
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Also measure a relay process's peak memory.")
@click.option("--memory-sizes", default=None, callback=parse_optional_sizes,
              help="Backlog sizes for the memory measurement [default: --sizes].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/drain.json"),
              show_default=True)
def main(rows: int | None, repeat: int, batch_size: int, out: Path,
         sizes: tuple[int, ...] = DEFAULT_SIZES, big_repeat: int | None = None,
         memory: bool = True, memory_sizes: tuple[int, ...] | None = None) -> None:
    """Drain backlogs of several sizes through both emulators; report ratios and memory.

    \f
    ``benchmarks.run`` calls ``main.callback(rows, repeat, batch_size, out)``:
    a ``rows`` that is not None stands for ``sizes=(rows,)``.
    """
    started = time.perf_counter()
    if rows is not None:
        sizes = (rows,)
    sizes = parse_sizes(None, None, sizes)
    memory_sizes = sizes if memory_sizes is None else parse_sizes(None, None, memory_sizes)
    curves: list[dict[str, Any]] = []
    memories: list[dict[str, Any]] = []
    jobs_rows: list[dict[str, Any]] = []
    with BigQueryEmulator(PROJECT) as bq, PubSubEmulator(PROJECT) as ps:
        bench = Bench(bq, ps)
        for size in sizes:
            size_started = time.perf_counter()
            rounds = big_repeat if big_repeat is not None and size > 100_000 else repeat
            data = scraper_rows(size, seed=42)
            messages = encode(data)
            done: list[Round] = []
            for i in range(rounds):
                console.print(f"{size:,} rows, round {i + 1}/{rounds}: raw publish, "
                              "publish RPC only, relay drain ...")
                raw = bench.raw_publish(messages)
                rpc = bench.rpc_publish(messages, batch_size)
                drained = bench.relay_drain(data, batch_size)
                done.append(Round(raw, rpc, drained["seconds"], drained["snapshot_seconds"],
                                  drained["fold_seconds"]))
            del data, messages
            curves.append({
                "rows": size, "rounds": rounds,
                "median_ratio": statistics.median(r.ratio for r in done),
                "median_rpc_ratio": statistics.median(r.rpc_ratio for r in done),
                "median_ratio_without_fold": statistics.median(
                    r.ratio_without_fold for r in done),
                "round_results": [r.as_dict() for r in done],
                "seconds_taken": time.perf_counter() - size_started,
            })
        if memory:
            for size in memory_sizes:
                console.print(f"{size:,} rows: peak memory of a relay process draining them ...")
                memories.append({"rows": size,
                                 **bench.relay_memory(scraper_rows(size, seed=size), batch_size)})
        for size in (100, 500, 1000, 5000):
            drained = bench.relay_drain(scraper_rows(size * 4, seed=size), size)
            jobs_rows.append({"batch_size": size, "rows": size * 4, **drained})

    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "batch_size": batch_size,
        "sizes": list(sizes),
        "memory_sizes": list(memory_sizes) if memory else [],
        "goal": {"ratio_at_least": GOAL_RATIO, "peak_rss_mb_under": GOAL_RSS_MB},
        "drain": curves,
        "memory": memories,
        "jobs_per_batch": jobs_rows,
        "total_seconds": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_tables(result)
    console.print(f"results written to {out}; took {result['total_seconds']:.0f} s")


def print_tables(result: dict[str, Any]) -> None:
    """The rich tables of a result (also usable on a saved JSON)."""
    batch = result["batch_size"]
    table = Table(title=f"Drain curves, batch {batch:,}: relay vs raw client.publish "
                        "(same messages, same run)")
    for col in ("rows", "round", "raw s", "RPC-only s", "relay s", "of it: snapshot s",
                "fold s", "ratio", "ratio vs RPC-only", "ratio w/o fold"):
        table.add_column(col, justify="right")
    for curve in result["drain"]:
        n = curve["rows"]
        for i, r in enumerate(curve["round_results"], 1):
            table.add_row(f"{n:,}", str(i), f"{r['raw_publish_seconds']:.2f}",
                          f"{r['rpc_publish_seconds']:.2f}", f"{r['relay_seconds']:.2f}",
                          f"{r['snapshot_seconds']:.2f}", f"{r['fold_seconds']:.2f}",
                          f"{r['ratio']:.2f}", f"{r['rpc_ratio']:.2f}",
                          f"{r['ratio_without_fold']:.2f}")
        ok = curve["median_ratio"] >= GOAL_RATIO
        table.add_row(f"{n:,}", "median", "", "", "", "", "",
                      f"[bold {'green' if ok else 'red'}]{curve['median_ratio']:.2f}[/]",
                      f"{curve['median_rpc_ratio']:.2f}",
                      f"{curve['median_ratio_without_fold']:.2f}", end_section=True)
    console.print(table)

    summary = Table(title=f"Drain throughput by backlog size (goal: ratio >= {GOAL_RATIO})")
    for col in ("rows", "rounds", "median raw s", "median relay s", "raw msg/s",
                "relay rows/s", "median ratio"):
        summary.add_column(col, justify="right")
    for curve in result["drain"]:
        n, rounds = curve["rows"], curve["round_results"]
        raw = statistics.median(r["raw_publish_seconds"] for r in rounds)
        relay = statistics.median(r["relay_seconds"] for r in rounds)
        summary.add_row(f"{n:,}", str(curve["rounds"]), f"{raw:.2f}", f"{relay:.2f}",
                        f"{n / raw:,.0f}", f"{n / relay:,.0f}", f"{curve['median_ratio']:.2f}")
    console.print(summary)

    if result["memory"]:
        mem = Table(title=f"Peak memory of a relay process draining the backlog "
                          f"(fresh interpreter; goal: < {GOAL_RSS_MB:.0f} MB, flat)")
        for col in ("rows", "peak RSS MB", "RSS before the run MB", "added by the run MB",
                    "drain s"):
            mem.add_column(col, justify="right")
        for m in result["memory"]:
            mem.add_row(f"{m['rows']:,}", f"{m['peak_rss_mb']:.0f}", f"{m['rss_before_mb']:.0f}",
                        f"{m['peak_rss_mb'] - m['rss_before_mb']:.0f}", f"{m['seconds']:.1f}")
        console.print(mem)

    jobs = Table(title="BigQuery work per run as the batch grows (one run, 4 batches)")
    for col in ("batch size", "rows", "batches", "query/DML jobs", "jobs/batch",
                "read sessions", "appends"):
        jobs.add_column(col, justify="right")
    for j in result["jobs_per_batch"]:
        jobs.add_row(str(j["batch_size"]), f"{j['rows']:,}", str(j["batches"]), str(j["jobs"]),
                     f"{j['jobs_per_batch']:.2f}", str(j["read_sessions"]), str(j["appends"]))
    console.print(jobs)


if __name__ == "__main__":
    main()

"""Peak memory of a relay process draining a backlog, measured in a child.

Why a child process: the benchmark itself holds the backlog's rows and the
raw-publish baseline's messages, which would swamp the relay's own memory.
The child is a fresh interpreter that wires a relay against the running
emulators exactly as a relay service would (a store, a publisher, a lease),
runs one ``Relay.run_once()`` and reports its peak resident set size. It also
reports its resident set just before the run, so that what the drain itself
adds can be read apart from the interpreter and the Google client libraries.

The peak is ``VmHWM`` from ``/proc/self/status``, read in the child. Not
``ru_maxrss``: Linux carries it across ``exec``, so a child forked from this
large benchmark process reports the parent's size (1.5 GB in a full run)
whatever it did itself. It is kept in the JSON as ``ru_maxrss_mb``, and used
only where there is no /proc.

The parent side is ``benchmarks.drain`` (``Bench.relay_memory``): it fills a
fresh log table per size and starts the child on it with :func:`run_child`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

PROJECT = "bench-project"
ROOT = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB) in MB; 0.0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass(frozen=True)
class Target:
    """Where the child finds the emulators and the backlog to drain."""

    bigquery_rest: str
    bigquery_grpc: str
    pubsub: str
    dataset: str
    topic: str
    batch_size: int

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.drain_memory",
                "--bigquery-rest", self.bigquery_rest, "--bigquery-grpc", self.bigquery_grpc,
                "--pubsub", self.pubsub, "--dataset", self.dataset, "--topic", self.topic,
                "--batch-size", str(self.batch_size)]


def run_child(target: Target, timeout: float = 1800.0) -> dict[str, Any]:
    """Drain ``target`` in a fresh interpreter; its report as a dict."""
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": target.pubsub}
    done = subprocess.run(target.argv(), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _drain(target: Target) -> dict[str, Any]:
    """The child's work: wire a relay like a service does, drain once, report."""
    # Imported here so that the parent's import of this module stays light and
    # the child's baseline includes everything a relay process loads.
    from outbox.bigquery_lease import BigQueryLease
    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.messages import V1_COLUMNS, encode_scraper_complete_v1
    from outbox.pubsub_publisher import PubSubPublisher
    from outbox.routes import Route
    from outbox.schema import OUTBOX_JOURNAL, OUTBOX_LEASE, SCRAPER_EXECUTION_LOG
    from outbox.wiring import Settings, Wiring
    from relay import Relay, RelayConfig

    settings = Settings(project=PROJECT, bigquery_emulator=target.bigquery_rest,
                        bigquery_emulator_grpc=target.bigquery_grpc,
                        pubsub_emulator=target.pubsub)
    wiring = Wiring.build(settings)
    log = SCRAPER_EXECUTION_LOG.with_location(target.dataset)
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log, "scrapers",
                                OUTBOX_JOURNAL.with_location(target.dataset),
                                columns=V1_COLUMNS, reader=wiring.reader)
    route = Route("scrapers", log, target.topic, encode_scraper_complete_v1)
    publisher = PubSubPublisher(PROJECT)
    lease = BigQueryLease(wiring.bigquery, PROJECT, OUTBOX_LEASE.with_location(target.dataset))
    relay = Relay(route, store, publisher, RelayConfig(
        batch_size=target.batch_size, deadline=dt.timedelta(hours=1)), lease)
    before_mb = _status_mb("VmRSS")
    t0 = time.perf_counter()
    summary = relay.run_once()
    seconds = time.perf_counter() - t0
    publisher.close()
    ru_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "published": summary.published,
        "marked": summary.marked,
        "batches": summary.batches,
        "stopped": summary.stopped,
        "seconds": seconds,
        "rss_before_mb": before_mb,
        "peak_rss_mb": _status_mb("VmHWM") or ru_maxrss_mb,
        "ru_maxrss_mb": ru_maxrss_mb,
    }


@click.command()
@click.option("--bigquery-rest", required=True, help="bqemulator REST host:port.")
@click.option("--bigquery-grpc", required=True, help="bqemulator gRPC host:port.")
@click.option("--pubsub", required=True, help="Pub/Sub emulator host:port.")
@click.option("--dataset", required=True)
@click.option("--topic", required=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=5000, show_default=True)
def main(bigquery_rest: str, bigquery_grpc: str, pubsub: str, dataset: str, topic: str,
         batch_size: int) -> None:
    """Child: drain one prepared backlog and print one JSON line about memory."""
    target = Target(bigquery_rest, bigquery_grpc, pubsub, dataset, topic, batch_size)
    click.echo(json.dumps(_drain(target)))


if __name__ == "__main__":
    main()

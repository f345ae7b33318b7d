"""``/process`` overhead: the processors service against a bare Flask endpoint (issue 3).

What is measured: everything ``/process`` does around a processor, envelope
decoding, routing, the dedupe lookup, reading the blob, the processor
execution log row and the ledger record, with a **no-op processor**
(``processors.testing.FakeProcessor``), an in-memory blob store, the in-memory
log writer and the in-memory ledger (``processors.testing.InMemoryLedger``).
The baseline is a Flask app whose ``POST /process`` reads the body and answers
204. Both are built the same way (``Flask``, the same ``MAX_CONTENT_LENGTH``),
served the same way and sent the same bodies; only the handler differs.

Why a real server and not Flask's test client: Pub/Sub pushes over HTTP, so
the question is what share of a serving process's capacity the handler takes.
Each side runs under gunicorn exactly as production does
(``--workers 1 --threads 8 --timeout 0``, gthread), in a process of its own,
fresh for every round; a thread pool of 8 keep-alive connections sends the
same pushes to each, in alternating batches, so that whatever else the
machine does falls on both sides alike. Two figures per side: requests/s (wall clock, what the load
generator got) and the server process's **CPU time per request** (from
``/proc``). The CPU ratio is the headline: on two cores the load generator
shares the machine with the server and can be the bottleneck of the fast
(bare) side, which flatters the requests/s ratio; CPU per request is what
caps a server's throughput, whoever else is busy. The in-process test-client
ratio is printed too, as a cross-check: there the baseline pays no HTTP
server at all, so the same handler cost weighs more.

The in-memory ledger is a list it scans (a test double, O(n)); each round
starts with an empty one, so it holds at most ``warmup + requests`` records.
The growth table measures the handler alone against ledger size, for that
double and for what production uses in front of BigQuery, the in-process
cache of :class:`~processors.dedupe.BigQueryLedger`. The BigQuery lookup
itself (one query per uncached delivery) is timed on bqemulator, apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import io
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from flask import Flask, request
from rich.console import Console
from rich.table import Table

from outbox import logs
from outbox.blobs import InMemoryBlobs
from outbox.emulators import free_port
from outbox.messages import encode_scraper_complete_v1
from outbox.routes import PHASE2_COMPLETE
from outbox.samples import scraper_row
from outbox.testing import InMemoryOutboxStore
from processors.base import Processor
from processors.dedupe import PROCESSED_EVENTS, BigQueryLedger, ProcessedLedger, RecentlyProcessed
from processors.registry import RULES, Registry
from processors.service import MAX_BODY_BYTES, Handler, create_app
from processors.testing import FakeProcessor, InMemoryLedger, InMemoryQuarantine, push_body

console = Console()
ROOT = Path(__file__).resolve().parents[1]
FILE_PATH = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
"""Routed by the second rule of the shipped registry, as a games file is."""
FILE_URI = f"mem://{FILE_PATH}"
PROCESSOR = "bdl_games"
THREADS = 8
WARMUP = 300
BATCH = 250
"""Pushes per turn when the two sides alternate."""
LEDGER_SIZES = (1_000, 10_000, 100_000)
_TICKS = os.sysconf("SC_CLK_TCK")


# -- the two apps (gunicorn imports these factories) ---------------------------------------


def noop_processors() -> dict[str, Processor]:
    """One no-op processor per rule of the shipped registry, under the real names."""
    return {rule.processor: FakeProcessor(rule.processor) for rule in RULES}


def service_app(ledger: ProcessedLedger | None = None) -> Flask:
    """The real service (``create_app``, the shipped ``Registry``) on in-memory parts."""
    blobs = InMemoryBlobs()
    blobs.write(FILE_PATH, b'{"data": []}')
    return create_app(noop_processors(), Registry(), ledger or InMemoryLedger(), blobs,
                      InMemoryOutboxStore(PHASE2_COMPLETE.table, PHASE2_COMPLETE.name),
                      InMemoryQuarantine())


def bare_app() -> Flask:
    """The baseline: read the body, answer 204."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/process")
    def process() -> tuple[str, int]:
        request.get_data(cache=False)
        return "", 204

    return app


APPS: dict[str, Callable[[], Flask]] = {"bare": bare_app, "process": service_app}
FACTORIES = {"bare": "bare_app", "process": "service_app"}
"""What gunicorn imports for each side."""


def event_ids(n: int, seed: str) -> list[str]:
    """``n`` distinct scraper run ids (8 hex characters, then a counter)."""
    prefix = uuid.UUID(int=random.Random(seed).getrandbits(128)).hex[:8]
    return [f"{prefix}{i:06x}" for i in range(n)]


def deliveries(ids: Sequence[str]) -> list[bytes]:
    """One push body per id: a successful games scrape, encoded as the relay does (v1)."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for i, execution_id in enumerate(ids):
        row = scraper_row(random.Random(i), now, execution_id=execution_id,
                          scraper_name="bdl_games_scraper", status="success",
                          gcs_path=FILE_URI, completed_at=now, duration_seconds=1.5,
                          error_type=None, error_message=None)
        message = encode_scraper_complete_v1(row)
        out.append(push_body(message.data, message.attributes, message_id=f"{execution_id}-{i}",
                             delivery_attempt=None))
    return out


# -- serving under gunicorn, and the load generator ----------------------------------------


@dataclass(frozen=True)
class Served:
    port: int
    worker: int
    """pid of gunicorn's worker process, whose CPU time is read from /proc."""


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextlib.contextmanager
def gunicorn(side: str, threads: int = THREADS) -> Iterator[Served]:
    """``side``'s app under gunicorn as production runs the service, on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(threads),
         "--timeout", "0", "--log-level", "warning", "-b", f"127.0.0.1:{port}",
         f"benchmarks.process_overhead:{FACTORIES[side]}()"],
        cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"gunicorn ({side}) exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                workers = _children(proc.pid)
                if workers:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn ({side}) did not start in 30 s")
            time.sleep(0.05)
        yield Served(port, workers[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def send(port: int, bodies: Sequence[bytes], threads: int = THREADS) -> tuple[float, Counter[int]]:
    """POST every body from ``threads`` keep-alive connections; (seconds, status counts)."""
    shares = [bodies[i::threads] for i in range(threads)]
    start = threading.Barrier(threads + 1)
    headers = {"Content-Type": "application/json"}

    def worker(share: Sequence[bytes]) -> Counter[int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        statuses: Counter[int] = Counter()
        start.wait()
        for body in share:
            conn.request("POST", "/process", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
        conn.close()
        return statuses

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, share) for share in shares]
        start.wait()
        t0 = time.perf_counter()
        counts = sum((f.result() for f in futures), Counter[int]())
        seconds = time.perf_counter() - t0
    return seconds, counts


def served_round(bodies: Sequence[bytes], warmup: Sequence[bytes], first: str,
                 batch: int = BATCH) -> dict[str, dict[str, float]]:
    """Both sides served at once, fresh; the same batches sent to each in turn.

    Alternating batches of ``batch`` pushes (``first`` side first) spreads
    whatever else the machine is doing evenly over both sides.
    """
    sides = (first, "process" if first == "bare" else "bare")
    seconds, cpu = dict.fromkeys(sides, 0.0), {}
    statuses: dict[str, Counter[int]] = {side: Counter() for side in sides}
    with gunicorn(sides[0]) as a, gunicorn(sides[1]) as b:
        servers = dict(zip(sides, (a, b), strict=True))
        for side in sides:
            send(servers[side].port, warmup)
            cpu[side] = -cpu_seconds(servers[side].worker)
        for i in range(0, len(bodies), batch):
            for side in sides:
                took, got = send(servers[side].port, bodies[i:i + batch])
                seconds[side] += took
                statuses[side] += got
        for side in sides:  # an idle gthread worker burns next to nothing meanwhile
            cpu[side] += cpu_seconds(servers[side].worker)
    for side, expected in (("bare", 204), ("process", 200)):
        if statuses[side] != Counter({expected: len(bodies)}):
            raise SystemExit(f"{side}: unexpected statuses {dict(statuses[side])}")
    return {side: {"rps": len(bodies) / seconds[side], "cpu_us": cpu[side] / len(bodies) * 1e6}
            for side in sides}


def test_client_rps(side: str, bodies: Sequence[bytes], warmup: Sequence[bytes]) -> float:
    """The same, in process through Flask's test client (no HTTP server): a cross-check."""
    client = APPS[side]().test_client()
    for body in warmup:
        client.post("/process", data=body, content_type="application/json")
    t0 = time.perf_counter()
    for body in bodies:
        client.post("/process", data=body, content_type="application/json")
    return len(bodies) / (time.perf_counter() - t0)


# -- the handler alone, as the ledger grows -------------------------------------------------


def handler_us(handler: Handler, bodies: Sequence[bytes], outcome: str) -> float:
    """Microseconds per ``Handler.respond`` (no Flask, no HTTP), checking every outcome."""
    before = handler.counts[outcome]
    t0 = time.perf_counter()
    for body in bodies:
        handler.respond(body)
    us = (time.perf_counter() - t0) / len(bodies) * 1e6
    if handler.counts[outcome] - before != len(bodies):
        raise SystemExit(f"expected {len(bodies)} x {outcome}, got {dict(handler.counts)}")
    return us


def _handler(ledger: ProcessedLedger) -> Handler:
    return cast(Handler, service_app(ledger).extensions["processors.handler"])


def growth(sizes: Sequence[int], probes: int = 300) -> list[dict[str, Any]]:
    """Handler µs per delivery with ``n`` records already processed, for each ``n``."""
    rows = []
    now = dt.datetime.now(dt.UTC)
    for n in sizes:
        processed = event_ids(n, seed=f"processed-{n}")
        memory = InMemoryLedger()
        memory.rows.extend({"execution_id": k, "processor": PROCESSOR,
                            "event_date": now.date(), "processed_at": now} for k in processed)
        new_memory = handler_us(_handler(memory), deliveries(event_ids(probes, seed=f"new-{n}")),
                                "processed")
        cache = RecentlyProcessed(size=n)
        for k in processed:
            cache.put((k, PROCESSOR), now.date())
        # A redelivery the cache holds never reaches BigQuery: no client is needed.
        cached = BigQueryLedger(cast(Any, None), cast(Any, None), "bench", cache=cache)
        again = deliveries(random.Random(n).sample(processed, min(probes, n)))
        rows.append({"records": n, "new_event_memory_ledger_us": new_memory,
                     "redelivery_bigquery_cache_us": handler_us(_handler(cached), again,
                                                                "duplicate")})
    return rows


def logging_cost(probes: int = 1000) -> dict[str, float]:
    """Handler µs per new event without and with the production JSON log line."""
    bodies = deliveries(event_ids(2 * probes, seed="logging"))
    quiet = handler_us(_handler(InMemoryLedger()), bodies[:probes], "processed")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("INFO", stream=io.StringIO())
        logged = handler_us(_handler(InMemoryLedger()), bodies[probes:], "processed")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    return {"handler_us": quiet, "handler_with_json_log_us": logged}


# -- the BigQuery lookup, on bqemulator -----------------------------------------------------


def bigquery_lookup(samples: int = 30) -> dict[str, float]:
    """Milliseconds of ``BigQueryLedger.seen`` on bqemulator: uncached miss, uncached
    hit (one query each), and a cached hit (none)."""
    from outbox.bigquery_tables import ensure_tables
    from outbox.emulators import BigQueryEmulator
    from outbox.wiring import Settings, Wiring
    from processors.dedupe import LedgerEntry

    with BigQueryEmulator("bench-project") as bq:
        wiring = Wiring.build(Settings(
            project=bq.project, bigquery_emulator=bq.rest_url.removeprefix("http://"),
            bigquery_emulator_grpc=bq.grpc_endpoint))
        spec = PROCESSED_EVENTS.with_location(f"bench_{uuid.uuid4().hex[:8]}")
        ensure_tables(wiring.bigquery, bq.project, [spec])
        now = dt.datetime.now(dt.UTC)
        known = [f"known{i:05d}" for i in range(1000)]
        wiring.appender.append(spec, [
            LedgerEntry(k, PROCESSOR, now.date(), now).row(spec) for k in known])

        def timed(ids: Sequence[str], ledger: Callable[[], BigQueryLedger],
                  expect: bool) -> float:
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


# -- the whole benchmark --------------------------------------------------------------------


def run(requests: int = 2000, rounds: int = 5, bigquery: bool = True) -> dict[str, Any]:
    served: dict[str, list[dict[str, float]]] = {"bare": [], "process": []}
    in_process: dict[str, list[float]] = {"bare": [], "process": []}
    for r in range(rounds):
        bodies = deliveries(event_ids(requests, seed=f"round-{r}"))
        warmup = deliveries(event_ids(WARMUP, seed=f"warmup-{r}"))
        order = ("bare", "process") if r % 2 == 0 else ("process", "bare")
        console.print(f"round {r + 1}/{rounds}: {requests} pushes to each side under gunicorn, "
                      f"in alternating batches of {BATCH} ({order[0]} first) ...")
        both = served_round(bodies, warmup, order[0])
        for side in order:
            served[side].append(both[side])
        for side in order:
            in_process[side].append(test_client_rps(side, bodies, warmup))
    ratios = [p["rps"] / b["rps"] for b, p in zip(served["bare"], served["process"], strict=True)]
    cpu_ratios = [b["cpu_us"] / p["cpu_us"]
                  for b, p in zip(served["bare"], served["process"], strict=True)]
    tc_ratios = [p / b for b, p in zip(in_process["bare"], in_process["process"], strict=True)]
    console.print("handler alone, as the ledger grows ...")
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                        * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "requests": requests, "rounds": rounds, "threads": THREADS, "warmup": WARMUP,
        "served": served, "ratios": ratios, "median_ratio": statistics.median(ratios),
        "cpu_ratios": cpu_ratios, "median_cpu_ratio": statistics.median(cpu_ratios),
        "test_client_rps": in_process, "test_client_ratios": tc_ratios,
        "median_test_client_ratio": statistics.median(tc_ratios),
        "growth": growth(LEDGER_SIZES), "logging": logging_cost(),
    }
    if bigquery:
        console.print("BigQuery ledger lookups on bqemulator ...")
        result["bigquery_lookup"] = bigquery_lookup()
    return result


def report(result: dict[str, Any]) -> None:
    served = result["served"]
    table = Table(title=f"/process vs a bare Flask endpoint, both under gunicorn "
                        f"({result['requests']} pushes per side per round)")
    for col in ("round", "bare req/s", "/process req/s", "req/s ratio", "bare CPU µs/req",
                "/process CPU µs/req", "CPU ratio"):
        table.add_column(col, justify="right")
    for i, (b, p) in enumerate(zip(served["bare"], served["process"], strict=True)):
        table.add_row(str(i + 1), f"{b['rps']:,.0f}", f"{p['rps']:,.0f}",
                      f"{result['ratios'][i]:.2f}", f"{b['cpu_us']:.0f}", f"{p['cpu_us']:.0f}",
                      f"{result['cpu_ratios'][i]:.2f}")
    table.add_row("median", f"{statistics.median(b['rps'] for b in served['bare']):,.0f}",
                  f"{statistics.median(p['rps'] for p in served['process']):,.0f}",
                  f"{result['median_ratio']:.2f}",
                  f"{statistics.median(b['cpu_us'] for b in served['bare']):.0f}",
                  f"{statistics.median(p['cpu_us'] for p in served['process']):.0f}",
                  f"[bold]{result['median_cpu_ratio']:.2f}[/]")
    console.print(table)
    shown = ", ".join(f"{r:.2f}" for r in result["test_client_ratios"])
    console.print(f"in process, Flask's test client (no HTTP server): ratio median "
                  f"{result['median_test_client_ratio']:.2f} ({shown})")
    grown = Table(title="Handler.respond alone (µs per delivery) as the ledger grows")
    for col in ("records", "new event, in-memory ledger (indexed)",
                "redelivery, BigQueryLedger cache"):
        grown.add_column(col, justify="right")
    for g in result["growth"]:
        grown.add_row(f"{g['records']:,}", f"{g['new_event_memory_ledger_us']:,.0f}",
                      f"{g['redelivery_bigquery_cache_us']:,.0f}")
    console.print(grown)
    lg = result["logging"]
    console.print(f"handler per new event: {lg['handler_us']:.0f} µs; with the production JSON "
                  f"log line: {lg['handler_with_json_log_us']:.0f} µs")
    if bq := result.get("bigquery_lookup"):
        console.print(f"BigQueryLedger.seen on bqemulator (median): miss {bq['miss_ms']:.1f} ms, "
                      f"uncached hit {bq['hit_uncached_ms']:.1f} ms, cached hit "
                      f"{bq['hit_cached_ms'] * 1000:.1f} µs")


def main(requests: int = 2000, rounds: int = 5, bigquery: bool = True,
         out: Path | None = None) -> dict[str, Any]:
    result = run(requests, rounds, bigquery)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    report(result)
    return result


if __name__ == "__main__":
    main(out=ROOT / "bench-results" / "process.json")

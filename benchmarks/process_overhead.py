"""``/process`` overhead: the processors service against a bare Flask endpoint (issue 3).

What is measured: everything ``/process`` does around a processor, envelope
decoding, routing, the dedupe lookup, reading the blob, the processor
execution log row and the ledger record, with a **no-op processor**
(``processors.testing.FakeProcessor``), an in-memory blob store, the in-memory
log writer and the in-memory ledger (``processors.testing.InMemoryLedger``).
The baseline is a Flask app whose ``POST /process`` reads the body and answers
204. Both are built the same way (``Flask``, the same ``MAX_CONTENT_LENGTH``),
served the same way and sent the same bodies; only the handler differs
(the apps and the pushes: :mod:`benchmarks.process_apps`).

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

The in-memory ledger is a test double indexed by (execution_id, processor);
each round starts with an empty one, so it holds at most ``warmup + requests``
records. The BigQuery lookup itself (one query per uncached delivery) is timed
on bqemulator apart, at a fixed 1,000 records
(:func:`benchmarks.ledger_lookup.bigquery_lookup`). How the handler and the
lookup behave as the ledger grows is :mod:`benchmarks.process_growth`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import io
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from benchmarks.bench_io import machine_info, save_and_report, wide_console
from benchmarks.bq_fill import emulated_bigquery
from benchmarks.ledger_lookup import bigquery_lookup
from benchmarks.process_apps import APPS, FACTORIES, deliveries, event_ids, handler_of, handler_us
from outbox import logs
from outbox.emulators import free_port
from processors.testing import InMemoryLedger

console = wide_console(160, honour_columns=True)
"""Piped output gets 160 columns (rich would use 80), so that the tables are not truncated."""
ROOT = Path(__file__).resolve().parents[1]
THREADS = 8
WARMUP = 300
BATCH = 250
"""Pushes per turn when the two sides alternate."""
_TICKS = os.sysconf("SC_CLK_TCK")


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
         FACTORIES[side]],
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


# -- the handler's own costs ---------------------------------------------------------------


def logging_cost(probes: int = 1000) -> dict[str, float]:
    """Handler µs per new event without and with the production JSON log line."""
    bodies = deliveries(event_ids(2 * probes, seed="logging"))
    quiet = handler_us(handler_of(InMemoryLedger()), bodies[:probes], "processed")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("INFO", stream=io.StringIO())
        logged = handler_us(handler_of(InMemoryLedger()), bodies[probes:], "processed")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    return {"handler_us": quiet, "handler_with_json_log_us": logged}


# -- the whole benchmark --------------------------------------------------------------------


def served_comparison(requests: int, rounds: int) -> dict[str, Any]:
    """/process against the bare endpoint under gunicorn, and through the test client."""
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
    return {
        "requests": requests, "rounds": rounds, "threads": THREADS, "warmup": WARMUP,
        "served": served, "ratios": ratios, "median_ratio": statistics.median(ratios),
        "cpu_ratios": cpu_ratios, "median_cpu_ratio": statistics.median(cpu_ratios),
        "test_client_rps": in_process, "test_client_ratios": tc_ratios,
        "median_test_client_ratio": statistics.median(tc_ratios),
    }


def run(requests: int = 2000, rounds: int = 5, bigquery: bool = True) -> dict[str, Any]:
    """The side-by-side, the cost of the log line, and (with ``bigquery``) the lookup."""
    result: dict[str, Any] = {"date": dt.date.today().isoformat(),
                              "machine": machine_info(memory_digits=1)}
    result |= served_comparison(requests, rounds)
    result["logging"] = logging_cost()
    if bigquery:
        with emulated_bigquery() as (bq, wiring):
            console.print("BigQuery ledger lookups on bqemulator ...")
            result["bigquery_lookup"] = bigquery_lookup(bq, wiring)
    return result


def report_served(result: dict[str, Any]) -> None:
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


def report(result: dict[str, Any]) -> None:
    report_served(result)
    lg = result["logging"]
    console.print(f"handler per new event: {lg['handler_us']:.0f} µs; with the production "
                  f"JSON log line: {lg['handler_with_json_log_us']:.0f} µs")
    if bq := result.get("bigquery_lookup"):
        console.print(f"BigQueryLedger.seen on bqemulator (median): miss {bq['miss_ms']:.1f} ms, "
                      f"uncached hit {bq['hit_uncached_ms']:.1f} ms, cached hit "
                      f"{bq['hit_cached_ms'] * 1000:.1f} µs")


def main(requests: int = 2000, rounds: int = 5, bigquery: bool = True,
         out: Path | None = None) -> dict[str, Any]:
    """Run, write the JSON to ``out`` (if given), print the tables; ``benchmarks.run`` calls
    this with ``(requests, rounds, out=...)``."""
    return save_and_report(run(requests, rounds, bigquery), out, report)


@click.command()
@click.option("--requests", type=click.IntRange(100), default=2000, show_default=True,
              help="Pushes per side per round (served comparison).")
@click.option("--rounds", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--bigquery/--no-bigquery", default=True, show_default=True,
              help="Also time the BigQuery lookup on bqemulator.")
@click.option("--out", type=click.Path(path_type=Path),
              default=ROOT / "bench-results" / "process.json",
              help="JSON output [default: bench-results/process.json].")
def cli(requests: int, rounds: int, bigquery: bool, out: Path) -> None:
    """/process against a bare Flask endpoint; the growth tables are benchmarks.process_growth."""
    main(requests, rounds, bigquery, out)


if __name__ == "__main__":
    cli()

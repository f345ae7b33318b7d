"""``make bench``: every benchmark, side by side on the emulators; see docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks import drain, latency, poll_cost, process_growth, process_overhead
from benchmarks.bench_io import save_and_report, sizes_callback
from benchmarks.ledger_lookup import LOOKUP_PROBES

console = Console()


@click.command()
@click.option("--drain-sizes", callback=sizes_callback(1000), default="10000,100000,200000",
              show_default=True, help="Backlog sizes for the drain curves, comma-separated.")
@click.option("--memory-sizes", callback=sizes_callback(1000),
              default="10000,50000,100000,200000", show_default=True,
              help="Backlog sizes for the relay's peak RSS, comma-separated.")
@click.option("--repeat", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=5000, show_default=True)
@click.option("--latency-rows", type=click.IntRange(10), default=300, show_default=True)
@click.option("--latency-rate", type=click.FloatRange(0.5, 200), default=10.0, show_default=True)
@click.option("--process-requests", type=click.IntRange(100), default=2000, show_default=True,
              help="Pushes per side per round for the /process overhead benchmark.")
@click.option("--process-rounds", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--growth-sizes", callback=sizes_callback(process_growth.MIN_SIZE),
              default=",".join(str(n) for n in process_growth.LEDGER_SIZES), show_default=True,
              help="Ledger sizes (records) for the /process growth tables, comma-separated.")
@click.option("--growth-probes", type=click.IntRange(5, 1000), default=LOOKUP_PROBES,
              show_default=True, help="BigQuery lookups timed per kind and ledger size.")
@click.option("--cost-sizes", callback=sizes_callback(0), default="1000,100000,1000000",
              show_default=True, help="Log history sizes (rows over 90 days) for the poll cost, "
                                      "comma-separated.")
@click.option("--cost-pending", type=click.IntRange(1, 10_000), default=200, show_default=True,
              help="Unpublished rows each publishing relay run drains in the poll cost.")
@click.option("--only", type=click.Choice(["drain", "latency", "process", "growth", "cost"]),
              default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"))
def main(drain_sizes: tuple[int, ...], memory_sizes: tuple[int, ...], repeat: int,
         batch_size: int, latency_rows: int, latency_rate: float, process_requests: int,
         process_rounds: int, growth_sizes: tuple[int, ...], growth_probes: int,
         cost_sizes: tuple[int, ...], cost_pending: int, only: str | None, out: Path) -> None:
    """Drain curves and the relay's peak memory, BigQuery jobs per batch, end-to-end
    latency, /process overhead and its growth with the ledger, poll cost as the log grows."""
    out.mkdir(parents=True, exist_ok=True)
    if only in (None, "drain"):
        drain.main.callback(None, repeat, batch_size, out / "drain.json",  # type: ignore[misc]
                            sizes=drain_sizes, memory_sizes=memory_sizes)
    if only in (None, "latency"):
        console.print(f"latency: {latency_rows} rows at {latency_rate}/s, relay every 1 s ...")
        result = latency.run(latency_rows, latency_rate, 1.0)
        (out / "latency.json").write_text(json.dumps(result, indent=2))
        table = Table(title="End-to-end latency: row written -> message received (relay every 1 s)")
        for col in ("rows", "received", "lost", "p50 s", "p99 s", "max s"):
            table.add_column(col, justify="right")
        table.add_row(str(result["rows"]), str(result["received"]), str(result["lost"]),
                      f"{result['p50_seconds']:.2f}", f"{result['p99_seconds']:.2f}",
                      f"{result['max_seconds']:.2f}")
        console.print(table)
    if only in (None, "process"):
        console.print(f"process: /process vs a bare Flask endpoint, {process_rounds} rounds of "
                      f"{process_requests} pushes per side ...")
        process_overhead.main(process_requests, process_rounds, out=out / "process.json")
    if only in (None, "growth"):
        console.print("growth: /process and its BigQuery lookup as the ledger grows ...")
        process_growth.main(growth_sizes, growth_probes, out=out / "process-growth.json")
    if only in (None, "cost"):
        console.print(f"cost: one relay run's poll cost as the log grows, {cost_pending} "
                      f"pending rows per run ...")
        save_and_report(poll_cost.run(cost_sizes, cost_pending), out / "cost.json",
                        poll_cost.report)

if __name__ == "__main__":
    main()

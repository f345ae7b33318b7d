"""``outbox chaos``: the fault-injection run and its table (see :mod:`outbox.chaos`)."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from outbox.chaos import FAULTS, ChaosResult, RoundResult, plan, run_chaos
from outbox.chaos_stack import ChaosStack
from outbox.errors import OutboxError

console = Console()
if not console.is_terminal:  # CI logs: keep each round on one line
    console = Console(width=120)


def rounds_table(result: ChaosResult) -> Table:
    table = Table(title=f"outbox chaos, seed {result.seed}: {len(result.rounds)} rounds")
    for col in ("round", "fault", "at s", "down s", "back after s", "events written",
                "duplicates caused", "re-sent", "lost"):
        table.add_column(col, justify="left" if col == "fault" else "right")
    for r in result.rounds:
        table.add_row(str(r.plan.number), r.plan.fault, f"{r.plan.at:.2f}",
                      f"{r.plan.down:.2f}", f"{r.back_after:.1f}", str(r.written),
                      str(r.duplicates), str(r.replayed),
                      f"[bold red]{r.lost}[/]" if r.lost else "0")
    table.add_section()
    table.add_row("total", "", "", "", "", str(sum(r.written for r in result.rounds)),
                  str(result.duplicates), str(result.replayed),
                  f"[bold red]{len(result.lost)}[/]" if result.lost else "[green]0[/]")
    return table


def verdict(result: ChaosResult) -> str:
    events = ", ".join(f"{n} {route}" for route, n in sorted(result.events.items()))
    colour = "green" if result.ok else "red"
    lines = [
        f"[{colour}]{'PASS' if result.ok else 'FAIL'}[/]: log rows {events}; "
        f"{result.processed}/{result.expected} scraper events processed; "
        f"lost {len(result.lost)}.",
        f"duplicates {result.duplicates} (bound: 2 batches of {result.relay_batch} for each of "
        f"{result.crashes} relay or broker crashes = {result.duplicate_bound}; "
        f"worst single crash {result.worst_crash}); "
        f"re-sent after broker restarts {result.replayed}; "
        f"(event, processor) pairs processed twice {result.reprocessed} (idempotent).",
        f"scrapes {result.scrapes}; relay runs {result.relay_runs}; "
        f"settled {result.settle_seconds:.0f} s after the last round.",
    ]
    if result.lost:
        lines.append("lost (first 20), as the audit found them:")
        lines.extend(f"  {line}" for line in result.lost_why[:20])
    return "\n".join(lines)


@click.command()
@click.option("--rounds", type=click.IntRange(1, 1000), default=30, show_default=True,
              help="Rounds to play; each injects one fault.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seeds the faults, their moments and the load; a run can be replayed.")
@click.option("--round", "only_round", type=click.IntRange(1), default=None,
              help="Replay just this round of --seed (same fault, same moment).")
@click.option("--round-seconds", type=click.FloatRange(3, 120), default=6.0, show_default=True,
              help="Length of a round; the fault strikes in its first 60 %.")
@click.option("--scrape-every", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              help="Seconds between scrape requests (each writes one event).")
@click.option("--relay-batch", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="The relay's batch size: what a crash may re-send is bounded by it.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Service logs and raw files (default: a fresh temporary directory).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the result as JSON here.")
def chaos(rounds: int, seed: int, only_round: int | None, round_seconds: float,
          scrape_every: float, relay_batch: int, workdir: Path | None,
          json_out: Path | None) -> None:
    """Kill the services and restart Pub/Sub at random moments under load, then
    audit: every event published and processed, none lost, duplicates bounded.
    Starts its own emulators; exits 1 if anything was lost or over the bound."""
    numbers = [only_round] if only_round else list(range(1, rounds + 1))
    workdir = workdir or Path(tempfile.mkdtemp(prefix="outbox-chaos-"))
    console.print(f"chaos: seed {seed}, rounds {numbers[0]}..{numbers[-1]}, faults "
                  f"{', '.join(FAULTS)}; service logs in {workdir}")

    def progress(r: RoundResult) -> None:
        console.print(f"  round {r.plan.number}: {r.plan.fault} at {r.plan.at:.2f} s, "
                      f"down {r.plan.down:.2f} s, back after {r.back_after:.1f} s"
                      + (f", {r.replayed} re-sent" if r.replayed else ""), highlight=False)

    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so no service or emulator outlives us.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack = ChaosStack(workdir, seed, relay_batch=relay_batch)
        with console.status("starting the emulators and the three services…"):
            stack.start()
        with stack:
            console.print(f"next: round {numbers[0]}: {plan(seed, numbers[0], round_seconds)}",
                          highlight=False)
            result = run_chaos(stack, seed, numbers, round_seconds, scrape_every,
                               on_round=progress)
    except OutboxError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; services and emulators stopped[/]")
        sys.exit(130)
    console.print(rounds_table(result))
    console.print(verdict(result), highlight=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.as_json(), indent=2, default=str))
    sys.exit(0 if result.ok else 1)

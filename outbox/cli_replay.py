"""``outbox replay``: re-publish a window of log rows on purpose.

A composition root like :mod:`outbox.cli`: it checks the request, builds the
BigQuery source and the Pub/Sub publisher, and runs
:class:`~outbox.replay.Replayer`. Every check runs before any client is
built, so a bad request sends nothing and exits 2.

Registered by ``outbox.cli`` with ``main.add_command(replay)``; this module
must not import ``outbox.cli``, which imports it.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from outbox.cli_common import graceful_sigint, settings_from_ctx, window_options
from outbox.clock import utcnow
from outbox.errors import ConfigError, OutboxError
from outbox.ports import Publisher
from outbox.replay import (
    Checkpoint,
    CheckpointFile,
    Replayer,
    ReplayInputError,
    ReplayQuery,
    ReplaySource,
    ReplaySummary,
    check_query,
    mismatch,
)
from outbox.replay_bigquery import BigQueryReplaySource
from outbox.routes import Route
from outbox.wiring import Settings

console = Console(stderr=False)


class Rate(click.ParamType):  # type: ignore[type-arg]
    """Messages per second, written ``N/s`` or ``N``; must be positive."""

    name = "N/s"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip().removesuffix("/s")
        try:
            rate = float(text)
        except ValueError:
            self.fail(f"{value!r}: use messages per second, e.g. 200/s", param, ctx)
        if not rate > 0 or rate == float("inf"):
            self.fail(f"{value!r}: the rate must be more than 0 messages per second", param, ctx)
        return rate


def _connect(settings: Settings, route: Route) -> tuple[ReplaySource, Callable[[], Publisher]]:
    """The real source and a publisher factory; the seam tests replace."""
    from outbox.pubsub_publisher import PubSubPublisher
    from outbox.wiring import bigquery_client

    source = BigQueryReplaySource(bigquery_client(settings), route, settings.project)
    return source, lambda: PubSubPublisher(settings.project)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- msg/s" if speed is None else f"{speed:,.1f} msg/s", style="cyan")


def _resume_command(query: ReplayQuery, path: Path) -> str:
    args = ["outbox", "replay", "--since", str(query.since), "--until", str(query.until),
            "--route", query.route]
    for name in query.names:
        args += ["--scraper", name]
    for status in query.statuses:
        args += ["--status", status]
    args += ["--force"] if query.force else []
    return shlex.join([*args, "--resume-file", str(path)])


def _summary_table(summary: ReplaySummary, route: Route, query: ReplayQuery,
                   path: Path) -> Table:
    table = Table("field", "value", title=f"replay {summary.replay_id} "
                  f"({'complete' if summary.done else 'stopped'})")
    for key, value in (
        ("replay_id", summary.replay_id), ("route", f"{route.name} -> {route.topic}"),
        ("window (UTC)", f"{query.since} .. {query.until}"), ("sent", summary.sent),
        ("failed", summary.failed), ("skipped (already sent)", summary.skipped),
        ("seconds", f"{summary.seconds:.2f}"), ("checkpoint", str(path)),
    ):
        table.add_row(key, str(value))
    return table


@click.command("replay")
@window_options
@click.option("--scraper", "names", multiple=True, metavar="NAME",
              help="Only rows of this scraper (processor with --route processors); "
                   "repeatable.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="Only rows with this status (success, no_data, failed, partial); "
                   "repeatable.")
@click.option("--route", "route_name", default="scrapers", show_default=True, metavar="ROUTE",
              help="Which log table and topic: scrapers or processors.")
@click.option("--rate", type=Rate(), default=None, metavar="N/s",
              help="At most this many messages per second, e.g. 200/s (default: no limit).")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=500, show_default=True,
              help="Messages per publish and per checkpoint.")
@click.option("--dry-run", is_flag=True,
              help="Print the row count and BigQuery's byte estimate; send nothing.")
@click.option("--force", is_flag=True,
              help="Add force=true: processors BYPASS their dedupe and re-process events "
                   "they already processed.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False,
              path_type=Path), default=None,
              help="Where a new replay keeps its checkpoint [default: ./replay-<id>.json].")
@click.option("--resume-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Continue the replay of this checkpoint, with the same "
              "replay_id; the other options must match it.")
@click.pass_context
def replay(ctx: click.Context, since: dt.datetime, until: dt.datetime,
           names: tuple[str, ...], statuses: tuple[str, ...], route_name: str,
           rate: float | None, batch_size: int, dry_run: bool, force: bool,
           checkpoint_path: Path | None, resume_file: Path | None) -> None:
    """Re-publish the log rows of a window to the route's topic.

    Rows go out whether or not the relay published them, with their original
    execution_id and body, so consumers' dedupe still drops events they
    already processed. Each message carries replay=true and replay_id. The
    live outbox is only read: the published flag, journal and lease are not
    touched.

    A checkpoint is written after every batch Pub/Sub acknowledged; after an
    interruption, --resume-file continues with the same replay_id. Resume is
    at-least-once per batch: a crash re-sends at most the batch in flight
    (a first Ctrl-C waits for it, so nothing is re-sent).

    Exits 2 for a bad request (nothing sent), 1 if any row failed or the
    replay stopped on an error, 130 when aborted.
    """
    settings = settings_from_ctx(ctx)
    try:
        route = settings.route(route_name)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--route") from exc
    query = ReplayQuery(route.name, since.date(), until.date(), tuple(sorted(set(names))),
                        tuple(sorted(set(statuses))), force)
    try:
        warnings = check_query(query, route, utcnow().date())
    except ReplayInputError as exc:
        raise click.UsageError(str(exc)) from exc
    if resume_file is not None and checkpoint_path is not None:
        raise click.UsageError("--checkpoint and --resume-file exclude each other")
    if resume_file is not None:
        checkpoint = _load(CheckpointFile(resume_file), query)
        path = resume_file
    else:
        checkpoint = Checkpoint.new(query)
        path = checkpoint_path or Path(f"replay-{checkpoint.replay_id}.json")
        if path.exists() and not dry_run:
            raise click.UsageError(f"{path} exists: resume it with --resume-file, or choose "
                                   "another --checkpoint")
    for warning in warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    try:
        source, make_publisher = _connect(settings, route)
        if dry_run:
            _dry_run(source, route, checkpoint)
            return
        _run(source, make_publisher, route, checkpoint, CheckpointFile(path), rate, batch_size)
    except OutboxError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)


def _load(file: CheckpointFile, query: ReplayQuery) -> Checkpoint:
    try:
        checkpoint = file.load()
    except ReplayInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--resume-file") from exc
    differences = mismatch(checkpoint.query, query)
    if differences:
        raise click.UsageError(f"{file.path} was written for other parameters; refusing to "
                               f"resume: {'; '.join(differences)}")
    return checkpoint


def _dry_run(source: ReplaySource, route: Route, checkpoint: Checkpoint) -> None:
    query = checkpoint.query
    remaining = 0 if checkpoint.done else source.count(query, checkpoint.cursor)
    estimate = source.estimate_bytes(query)
    table = Table("field", "value", title="replay dry run: nothing sent")
    table.add_row("route", f"{route.name}: {route.table.dataset}.{route.table.name} -> "
                  f"{route.topic}")
    table.add_row("window (UTC)", f"{query.since} .. {query.until}")
    table.add_row("filters", ", ".join([*(f"{n}" for n in query.names),
                                        *(f"status={s}" for s in query.statuses)]) or "none")
    if checkpoint.cursor is not None or checkpoint.done:
        table.add_row("already sent", str(checkpoint.sent))
    table.add_row("rows to send", str(remaining))
    table.add_row("estimated bytes (dry run)", "n/a" if estimate is None else f"{estimate:,}")
    console.print(table)


def _run(source: ReplaySource, make_publisher: Callable[[], Publisher], route: Route,
         checkpoint: Checkpoint, file: CheckpointFile, rate: float | None,
         batch_size: int) -> None:
    file.save(checkpoint)
    total = 0 if checkpoint.done else source.count(checkpoint.query, checkpoint.cursor)
    console.print(f"replay {checkpoint.replay_id}: {total} rows to {route.topic}; "
                  f"checkpoint {file.path}", highlight=False)
    publisher = make_publisher()
    replayer = Replayer(route, source, publisher, batch_size=batch_size, rate=rate)
    stop = threading.Event()
    progress = Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(),
                        TaskProgressColumn(), _RateColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = progress.add_task("replay", total=total)
    code = 0
    try:
        with progress, graceful_sigint(stop, console.print):
            replayer.run(checkpoint, file.save,
                         lambda s: progress.update(task, completed=s.sent + s.failed),
                         stop.is_set)
    except KeyboardInterrupt:
        console.print("[bold red]aborted:[/] the batch in flight may be re-sent on resume")
        code = 130
    except OutboxError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        code = 1
    finally:
        publisher.close()
    summary = replayer.summary
    console.print(_summary_table(summary, route, checkpoint.query, file.path))
    if summary.failed:
        shown = ", ".join(checkpoint.failed_ids[:10])
        console.print(f"[bold red]{summary.failed} rows failed for good[/] (ids in the "
                      f"checkpoint): {shown}", highlight=False)
        code = code or 1
    if not summary.done:
        code = code or 130  # stopped by a first Ctrl-C, between batches
        console.print(f"resume with: {_resume_command(checkpoint.query, file.path)}",
                      highlight=False, soft_wrap=True)
    if code:
        sys.exit(code)

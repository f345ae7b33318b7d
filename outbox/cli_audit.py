"""``outbox audit``: prove, for a window of days, that no event was lost.

A composition root like :mod:`outbox.cli_replay`: it checks the request,
builds the BigQuery source and runs :func:`~outbox.audit.run_audit`. Every
check runs before any client is built, so a bad request runs no query.

Exit codes, for a scheduled check: 0 nothing missing (warnings allowed), 1 an
event is missing (or the audit itself failed, said on stdout), 2 bad input.

Registered by ``outbox.cli``; this module must not import ``outbox.cli``,
which imports it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.console import Console
from rich.table import Column, Table

from outbox.audit import (
    AuditInputError,
    AuditReport,
    AuditSource,
    BigQueryAuditSource,
    Finding,
    check_window,
    run_audit,
)
from outbox.cli_common import settings_from_ctx, window_options
from outbox.clock import utcnow
from outbox.errors import ConfigError, OutboxError
from outbox.wiring import Settings

console = Console(stderr=False)


def _connect(settings: Settings) -> AuditSource:
    """The real source; the seam tests replace."""
    from outbox.wiring import bigquery_client

    return BigQueryAuditSource(bigquery_client(settings), settings.project)


def _count(done: int | None, of: int | None) -> str:
    return "-" if done is None or of is None else f"{done}/{of}"


def _days_table(report: AuditReport, route: str) -> Table:
    table = Table(Column("day (UTC)", no_wrap=True), "log rows", "journaled", "flagged",
                  "processed", "missing", "warnings", title=f"route {route}",
                  caption="journaled: published per the relay's journal; flagged: published "
                  "flag set; processed: of the events a processor is expected to process")
    days = [d for d in report.days if d.route == route]
    for d in days:
        table.add_row(str(d.day), str(d.logged), str(d.journaled), str(d.flagged),
                      _count(d.processed, d.expected),
                      f"[bold red]{d.missing}[/]" if d.missing else "0",
                      f"[yellow]{d.warnings}[/]" if d.warnings else "0")
    expected = [d.expected for d in days if d.expected is not None]
    processed = [d.processed for d in days if d.processed is not None]
    table.add_section()
    table.add_row("total", *(str(sum(getattr(d, k) for d in days))
                             for k in ("logged", "journaled", "flagged")),
                  _count(sum(processed), sum(expected)) if expected else "-",
                  *(str(sum(getattr(d, k) for d in days)) for k in ("missing", "warnings")),
                  style="bold")
    return table


def _findings_table(title: str, findings: list[Finding], limit: int) -> Table:
    table = Table("route", Column("day", no_wrap=True), Column("execution_id", no_wrap=True),
                  "step", Column("reason", ratio=1),
                  title=f"{title}: {len(findings)}", caption=(
                      f"... and {len(findings) - limit} more (--limit-missing, or --json for "
                      "all)" if len(findings) > limit else None))
    for f in findings[:limit]:
        table.add_row(f.route, str(f.day), f.execution_id, f.step, f.reason)
    return table


def render(report: AuditReport, out: Console, limit: int) -> None:
    w = report.window
    out.print(f"audit {w.since} .. {w.until} (UTC days of triggered_at), as of "
              f"{report.as_of:%Y-%m-%d %H:%M}Z", highlight=False)
    for route in report.routes:
        out.print(_days_table(report, route))
    if report.missing:
        out.print(_findings_table("missing events", report.missing, limit))
    if report.warnings:
        out.print(_findings_table("warnings (not losses)", report.warnings, limit))
    cost = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.cost.items())
    n = len(report.missing)
    verdict = (f"[bold red]{n} event{'s' * (n != 1)} missing[/]" if n
               else "[bold green]no event missing[/]")
    out.print(f"{verdict}; {len(report.warnings)} warnings; {cost}", highlight=False)


@click.command("audit")
@window_options
@click.option("--route", "route_names", multiple=True, metavar="ROUTE",
              help="Only this route (repeatable; default: every route).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--limit-missing", type=click.IntRange(min=0), default=50, show_default=True,
              help="Missing events (and warnings) listed in the table.")
@click.option("--grace", "grace_minutes", type=click.IntRange(min=0), default=15,
              show_default=True, metavar="MINUTES",
              help="Events younger than this are 'pending' warnings, not losses.")
@click.pass_context
def audit(ctx: click.Context, since: dt.datetime, until: dt.datetime,
          route_names: tuple[str, ...], as_json: bool, limit_missing: int,
          grace_minutes: int) -> None:
    """Compare, per route and UTC day, the log rows with what the relay published
    and what the processors processed, and list every event missing at a step.

    Steps: publish (neither journaled nor flagged; set-aside rows count, with
    their error), flag (journaled, flag not folded: a warning only) and, for
    scraper events a processor should handle, process (no ledger record).

    Exits 0 if nothing is missing, 1 if any event is missing, 2 for bad input.
    """
    settings = settings_from_ctx(ctx)
    try:
        routes = [settings.route(n) for n in dict.fromkeys(route_names)] or list(settings.routes)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--route") from exc
    now = utcnow()
    try:
        window = check_window(since.date(), until.date(), routes, now.date())
    except AuditInputError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        source = _connect(settings)
        report = run_audit(source, routes, window, now,
                           grace=dt.timedelta(minutes=grace_minutes))
    except OutboxError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report.as_json(), default=str))
    else:
        render(report, console, limit_missing)
    if report.exit_code:
        sys.exit(report.exit_code)

"""The ``outbox`` command: the operators' door into the outbox.

This module is a composition root: it builds settings and wiring, then calls
the same services (``Relay.run_once`` and friends) that the HTTP services do.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from outbox import logs
from outbox.cli_audit import audit
from outbox.cli_chaos import chaos
from outbox.cli_common import settings_from_ctx
from outbox.cli_dlq import dlq
from outbox.cli_infra import infra
from outbox.cli_replay import replay
from outbox.errors import ConfigError, OutboxError
from outbox.wiring import Settings, Wiring, all_tables

console = Console(stderr=False)


def _settings(ctx: click.Context) -> Settings:
    return settings_from_ctx(ctx)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    sys.exit(1)


@click.group()
@click.option("--project", envvar="OUTBOX_PROJECT", help="Google Cloud project id.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def main(ctx: click.Context, project: str | None, log_level: str) -> None:
    """Transactional outbox from BigQuery to Pub/Sub for the NBA pipeline."""
    logs.configure(log_level)
    ctx.obj = {"project": project}


@main.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the datasets, tables and topics the routes need. Idempotent."""
    from outbox.bigquery_tables import ensure_tables
    from outbox.pubsub_admin import ensure_topics

    settings = _settings(ctx)
    wiring = Wiring.build(settings)
    try:
        made = ensure_tables(wiring.bigquery, settings.project, all_tables(settings))
        topics = ensure_topics(settings.project, sorted({r.topic for r in settings.routes}))
    except OutboxError as exc:
        _fail(exc)
    table = Table("kind", "name", "state")
    for m in made:
        table.add_row(m.kind, m.name, "created" if m.created else "exists")
    for name, created in topics:
        table.add_row("topic", name, "created" if created else "exists")
    console.print(table)


@main.group()
def relay() -> None:
    """Run and inspect the relay."""


def _duration(value: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        number, unit = float(value[:-1]), value[-1]
        if unit not in units or number <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise click.BadParameter(
            f"{value!r}: use a positive number with s, m, h or d, e.g. 3d"
        ) from None
    return dt.timedelta(seconds=number * units[unit])


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return _duration(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


@relay.command("once")
@click.option("--route", "route_name", default="scrapers", show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--deadline", type=Duration(), default="50s", show_default=True)
@click.option("--lookback", type=Duration(), default="3d", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def relay_once(ctx: click.Context, route_name: str, batch_size: int, deadline: dt.timedelta,
               lookback: dt.timedelta, as_json: bool) -> None:
    """Drain one route once and print the run summary."""
    from relay import RelayConfig

    settings = _settings(ctx)
    try:
        route = settings.route(route_name)
        config = RelayConfig(batch_size=batch_size, deadline=deadline, lookback=lookback,
                             sweep_lookback=max(lookback, RelayConfig.sweep_lookback))
        wiring = Wiring.build(settings)
        publisher = wiring.publisher()
        try:
            summary = wiring.relay(route, config, publisher).run_once()
        finally:
            publisher.close()
    except OutboxError as exc:
        _fail(exc)
    data = summary.as_dict()
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    table = Table("field", "value", title=f"relay run {summary.run_id} ({route.name})")
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


@relay.command("set-aside")
@click.option("--route", "route_name", default="scrapers", show_default=True)
@click.option("--since", type=Duration(), default="90d", show_default=True,
              help="How far back to look.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def relay_set_aside(ctx: click.Context, route_name: str, since: dt.timedelta,
                    as_json: bool) -> None:
    """List rows the relay set aside as poison, with their last error."""
    settings = _settings(ctx)
    try:
        route = settings.route(route_name)
        rows = Wiring.build(settings).store(route).set_aside(dt.datetime.now(dt.UTC) - since)
    except OutboxError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], default=str))
        return
    table = Table("execution_id", "triggered_at", "attempts", "set aside at", "last error",
                  title=f"set-aside rows ({route.name}): {len(rows)}")
    for r in rows:
        table.add_row(r.execution_id, str(r.triggered_at), str(r.attempts), str(r.set_aside_at),
                      r.last_error or "")
    console.print(table)


@relay.command("schedule")
@click.option("--interval", type=click.FloatRange(1, 86_400), default=60.0, show_default=True,
              help="Seconds between the starts of relay runs.")
@click.option("--route", "route_name", default=None,
              help="Relay only this route (default: every route, in order).")
@click.option("--deadline", type=click.FloatRange(0, 3600, min_open=True), default=None,
              help="Seconds each run may take (default: the interval, at most 50).")
@click.pass_context
def relay_schedule(ctx: click.Context, interval: float, route_name: str | None,
                   deadline: float | None) -> None:
    """Run the relay every --interval seconds until SIGTERM or Ctrl-C.

    Runs never overlap; on a signal no new run starts, the current one
    finishes, and the command exits 0. Each run logs one JSON line per route.
    """
    import logging

    from relay.metrics import RelayMetrics
    from relay.schedule import schedule_relays
    from relay.service import RelayRunner, wired_relays

    settings = _settings(ctx)
    root = ctx.find_root()
    if root.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        logging.getLogger("relay").setLevel(logging.INFO)  # the run summaries are the output
    try:
        routes = [settings.route(route_name).name] if route_name else None
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--route") from exc
    seconds = deadline if deadline is not None else min(interval, 50.0)
    factory, close = wired_relays(settings)
    runner = RelayRunner(factory, [r.name for r in settings.routes], RelayMetrics())
    try:
        schedule_relays(lambda: runner.run(seconds, routes), interval)
    finally:
        close()


@main.command()
@click.option("--interval", type=click.FloatRange(0.5, 3600), default=2.0, show_default=True,
              help="Seconds between relay runs (each relays both routes).")
@click.option("--scrape-interval", type=click.FloatRange(0.5, 3600), default=5.0,
              show_default=True, help="Seconds between scraper cycles (every scraper once).")
@click.option("--days", type=click.IntRange(1, 30), default=3, show_default=True,
              help="Cycles scrape today, then yesterday, ... this many days back, and again.")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".dev/storage"), show_default=True,
              help="Directory the scrapers write raw files to (file://).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(".dev/dev.log"), show_default=True,
              help="Where the logs go while the live view owns the terminal.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the generated league (games, players, lines).")
@click.option("--duration", type=Duration(), default=None,
              help="Stop after this long (default: until Ctrl-C).")
def dev(interval: float, scrape_interval: float, days: int, storage: Path, log_file: Path,
        seed: int, duration: dt.timedelta | None) -> None:
    """Run the whole pipeline locally: emulators, scrapers against a fixture server,
    the relay, the processor service behind a push subscription, and a live view."""
    from outbox.devstack import DevOptions, run_dev

    options = DevOptions(interval=interval, scrape_interval=scrape_interval, days=days,
                         storage=storage, log_file=log_file, duration=duration, seed=seed)
    try:
        run_dev(options, console)
    except OutboxError as exc:
        _fail(exc)


@main.command()
@click.option("--route", "route_names", multiple=True,
              help="Only this route (repeatable; default: every route).")
@click.option("--lookback", type=Duration(), default="3d", show_default=True,
              help="Window for the backlog, as the relay's normal poll reads it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, for scripts.")
@click.pass_context
def status(ctx: click.Context, route_names: tuple[str, ...], lookback: dt.timedelta,
           as_json: bool) -> None:
    """Backlog, oldest pending age, recent publishes, set-aside rows and the last run."""
    from outbox import status as st

    settings = _settings(ctx)
    try:
        stores = st.stores_for(settings, list(route_names) or None)
        statuses = st.gather_all(stores, st.utcnow(), lookback)
    except OutboxError as exc:
        _fail(exc)
    if as_json:
        click.echo(st.to_json(statuses))
        return
    st.render(statuses, console)


@main.command()
@click.argument("name")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A scraper option, e.g. --opt date=2026-11-28 (repeatable).")
@click.option("--output", envvar="OUTBOX_STORAGE", default="gs://nba-scraped-data",
              show_default=True, help="Where the raw JSON goes: gs://bucket or file:///dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.pass_context
def scrape(ctx: click.Context, name: str, opts: tuple[str, ...], output: str,
           as_json: bool) -> None:
    """Run one scraper now: fetch, write the raw JSON, append its one log row.

    Exits 1 if the run failed or its row could not be written, 2 for an
    unknown scraper or bad options (then nothing is written).
    """
    from outbox.blobs import blobs_for
    from outbox.routes import SCRAPER_COMPLETE
    from scrapers.base import ScraperDeps
    from scrapers.options import InvalidOptions, validate_options
    from scrapers.registry import REGISTRY

    parsed: dict[str, str] = {}
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use key=value", param_hint="--opt")
        parsed[key.strip()] = value
    try:  # refuse a bad request before building any client
        scraper = REGISTRY.get(name)
        validate_options(scraper.options, parsed)
    except InvalidOptions as exc:
        raise click.UsageError(str(exc)) from exc
    settings = _settings(ctx)
    try:
        deps = ScraperDeps(Wiring.build(settings).store(SCRAPER_COMPLETE), blobs_for(output),
                           triggered_by="outbox scrape")
        report = scraper.run(deps, parsed)
    except OutboxError as exc:  # LogWriteFailed among them: already logged at ERROR
        _fail(exc)
    summary = report.summary()
    if as_json:
        click.echo(json.dumps(summary, default=str))
    else:
        table = Table("field", "value", title=f"{name} run {summary['execution_id']}")
        for key, value in summary.items():
            table.add_row(key, "" if value is None else str(value))
        console.print(table)
    if report.status == "failed":
        sys.exit(1)


@main.command()
@click.option("--since", type=Duration(), default="7d", show_default=True,
              help="How far back to look.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def quarantine(ctx: click.Context, since: dt.timedelta, limit: int, as_json: bool) -> None:
    """Deliveries /process refused for good (bad envelope, missing or malformed file)."""
    from processors.quarantine import BigQueryQuarantine

    settings = _settings(ctx)
    try:
        wiring = Wiring.build(settings)
        records = BigQueryQuarantine(wiring.bigquery, wiring.appender, settings.project
                                     ).list_quarantined(dt.datetime.now(dt.UTC) - since, limit)
    except OutboxError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.__dict__.items() if k != "envelope"}
                               for r in records], default=str))
        return
    table = Table("quarantined at", "reason", "execution_id", "processor", "detail",
                  title=f"quarantined deliveries: {len(records)}")
    for r in records:
        table.add_row(str(r.quarantined_at), r.reason, r.execution_id or "", r.processor or "",
                      r.detail[:100])
    console.print(table)


main.add_command(replay)
main.add_command(infra)
main.add_command(audit)
main.add_command(dlq)
main.add_command(chaos)


if __name__ == "__main__":  # pragma: no cover
    main()

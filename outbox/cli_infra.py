"""``outbox infra plan`` and ``outbox infra apply``: the platform's set-up, idempotently.

``outbox.cli`` registers the group (``main.add_command(infra)``). Its helpers
(``_settings``, ``_fail``, ``console``) are imported when a command runs,
not at import time, because ``outbox.cli`` imports this module.

Bad options are a usage error (exit 2) and a plan that apply cannot carry out
(no push endpoint for a new subscription) is refused (exit 1), both before
anything is read or changed. A blocked change (a subscription's filter, a
table's partitioning) is reported and apply exits 1 after making the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from google.auth.exceptions import GoogleAuthError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from outbox.errors import ConfigError, OutboxError
from outbox.infra import Change, Done, IamCommand, InfraOptions, Plan, apply, make_plan
from outbox.pubsub_admin import PubSubAdmin
from outbox.wiring import Settings, bigquery_client

_STYLE = {"create": "green", "update": "yellow", "blocked": "bold red", "ok": "dim",
          "created": "green", "updated": "yellow", "exists": "dim"}


@click.group()
def infra() -> None:
    """Bring Pub/Sub and BigQuery to the platform's set-up: plan, then apply."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options plan and apply share, so both read the same desired state."""
    decorators: list[Decorator] = [
        click.option("--push-endpoint", metavar="URL",
                     help="Where nba-processors-sub pushes, e.g. the nba-processors URL + "
                          "/process. Needed to create it; kept as is when omitted."),
        click.option("--push-audience", help="OIDC audience of the push token "
                                             "(default: the endpoint URL)."),
        click.option("--push-service-account", metavar="EMAIL",
                     help="Identity that signs the push OIDC token."),
        click.option("--project-number", help="For the IAM commands; looked up by the "
                                              "printed commands when omitted."),
        click.option("--region", help="Region of nba-processors (for its run.invoker binding); "
                                      "read from a *.REGION.run.app endpoint when omitted."),
        click.option("--dataset-suffix", default="", hidden=True,
                     help="Append to every dataset name (tests, staging)."),
        click.pass_context,
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _prepare(ctx: click.Context, options: dict[str, Any]) -> tuple[Settings, InfraOptions]:
    from outbox.cli import _settings

    settings = _settings(ctx)
    try:
        return settings, InfraOptions(
            settings.project, pubsub_emulator=settings.pubsub_emulator is not None,
            bigquery_emulator=settings.bigquery_emulator is not None, **options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@contextmanager
def _clients(settings: Settings) -> Iterator[tuple[PubSubAdmin, Any]]:
    try:
        pubsub, bq = PubSubAdmin(settings.project), bigquery_client(settings)
    except GoogleAuthError as exc:
        raise ConfigError(f"no Google credentials ({exc}): run `gcloud auth "
                          "application-default login`, or set the emulator hosts") from exc
    try:
        yield pubsub, bq
    finally:
        pubsub.close()
        bq.close()


@infra.command("plan")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON, for scripts.")
def plan_command(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Show what apply would create or update, field by field, and the IAM commands. Changes
    nothing."""
    from outbox.cli import _fail, console

    settings, opts = _prepare(ctx, options)
    try:
        with _clients(settings) as (pubsub, bq):
            plan = make_plan(opts, pubsub, bq)
    except OutboxError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(plan.as_dict()))
        return
    render_plan(plan, console)


@infra.command("apply")
@_options
def apply_command(ctx: click.Context, **options: Any) -> None:
    """Create what is missing and update what differs; print the IAM commands to run."""
    from outbox.cli import _fail, console

    settings, opts = _prepare(ctx, options)
    try:
        with _clients(settings) as (pubsub, bq):
            done = apply(make_plan(opts, pubsub, bq), pubsub, bq)
            plan = make_plan(opts, pubsub, bq)  # what is left: blocked changes only
    except OutboxError as exc:
        _fail(exc)
    render_done(done, console)
    render_iam(plan.iam, console)
    if plan.pending:
        console.print(f"[bold red]{len(plan.pending)} change(s) still pending[/]: "
                      + ", ".join(c.name for c in plan.pending), highlight=False)
        raise SystemExit(1)


def _describe(change: Change) -> str:
    lines = [f"{d.field}: {d.desired}" if change.action == "create"
             else f"{d.field}: {d.current} -> {d.desired}" for d in change.diffs]
    return "\n".join([*lines, *([change.note] if change.note else [])])


def render_plan(plan: Plan, console: Console) -> None:
    ok = len(plan.changes) - len(plan.pending)
    if not plan.pending:
        console.print(f"No changes: all {ok} resources match the platform's set-up.")
    else:
        table = Table("action", "kind", "name", "changes",
                      title=f"infra plan for {plan.project}")
        for c in plan.pending:
            table.add_row(Text(c.action, style=_STYLE[c.action]), c.kind, c.name,
                          Text(_describe(c)))
        console.print(table)
        counts = {a: sum(c.action == a for c in plan.pending) for a in ("create", "update",
                                                                          "blocked")}
        console.print(", ".join(f"{n} to {a}" if a != "blocked" else f"{n} blocked"
                                for a, n in counts.items()) + f", {ok} ok")
    for problem in plan.problems:
        console.print(f"[bold red]apply would refuse:[/] {problem}", highlight=False)
    render_iam(plan.iam, console)


def render_done(done: list[Done], console: Console) -> None:
    if not done:
        console.print("Nothing to do: everything matches the platform's set-up.")
        return
    table = Table("kind", "name", "done", title="infra apply")
    for d in done:
        style = _STYLE.get(d.outcome.split()[0], "bold red")
        table.add_row(d.kind, d.name, Text(d.outcome, style=style))
    console.print(table)


def render_iam(commands: list[IamCommand], console: Console) -> None:
    """Printed unwrapped and without markup, so each command can be pasted as it is."""
    console.print("\nIAM bindings (not applied by this command: run them against the real "
                  "project; the Pub/Sub emulator has no IAM):")
    for cmd in commands:
        console.print(f"# {cmd.why}", markup=False, highlight=False, soft_wrap=True)
        console.print(cmd.command, markup=False, highlight=False, soft_wrap=True)

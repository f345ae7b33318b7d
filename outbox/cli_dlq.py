"""``outbox dlq``: see what was dead-lettered, and re-drive it once the cause is fixed.

A composition root like :mod:`outbox.cli_replay`: it checks the request,
builds the subscriber and publisher, and runs :func:`outbox.dlq.peek` or
:class:`outbox.dlq.Redriver`. A malformed option exits 2 before any client is
built; an unknown subscription or topic exits 2 before anything is pulled.

Registered by ``outbox.cli`` with ``main.add_command(dlq)``; this module must
not import ``outbox.cli``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outbox.cli_common import graceful_sigint
from outbox.dlq import (
    SOURCE_PUBLISH_TIME,
    DeadLetter,
    DlqInputError,
    PubSubDeadLetters,
    Redriver,
    RedriveSummary,
    parse_filters,
    peek,
)
from outbox.errors import ConfigError, OutboxError
from outbox.infra import DLQ_SUBSCRIPTION, SCRAPER_TOPIC
from outbox.ports import Publisher
from outbox.pubsub_admin import PubSubAdmin

console = Console(stderr=False)


def _project(ctx: click.Context) -> str:
    from outbox.wiring import Settings

    obj: dict[str, Any] = ctx.obj or {}
    try:
        return Settings.from_env(obj.get("project")).project
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _publisher(project: str) -> Publisher:
    """The seam tests replace (a publisher that fails or is interrupted)."""
    from outbox.pubsub_publisher import PubSubPublisher

    return PubSubPublisher(project)


def _check(admin: PubSubAdmin, subscription: str, topic: str | None = None) -> None:
    """Exit 2 for a subscription or topic that does not exist, before anything is pulled."""
    try:
        sub = admin.get_subscription(subscription)
        missing_topic = topic is not None and admin.get_topic(topic) is None
    except OutboxError as exc:
        _fail(exc)
    if sub is None:
        raise click.BadParameter(f"subscription {subscription!r} does not exist in project "
                                 f"{admin.project}", param_hint="--subscription")
    if sub.push_endpoint:
        raise click.BadParameter(f"{subscription!r} is a push subscription; the DLQ is read "
                                 "through a pull subscription", param_hint="--subscription")
    if missing_topic:
        raise click.BadParameter(f"topic {topic!r} does not exist in project {admin.project}",
                                 param_hint="--topic")


def _source_topics(admin: PubSubAdmin) -> Callable[[DeadLetter], str | None]:
    """``topic_of`` for the Redriver: the topic of a letter's source subscription, read once
    per subscription. None (no objection) for another project's subscription, one that is
    gone, or a failed read."""
    cache: dict[str, str | None] = {}

    def topic_of(letter: DeadLetter) -> str | None:
        name = letter.source_subscription
        if not name or (letter.source_project or admin.project) != admin.project:
            return None
        if name not in cache:
            try:
                state = admin.get_subscription(name)
            except OutboxError:
                state = None
            cache[name] = state.topic if state else None
        return cache[name]

    return topic_of


def _fail(exc: Exception, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    sys.exit(code)


def _letters_table(letters: Sequence[DeadLetter], title: str, project: str) -> Table:
    """Ids and times are never cut or wrapped (operators copy them), names may wrap; the body
    preview gets the width left over, and is dropped on a narrow terminal (``--json`` has it)."""
    rows = []
    for d in letters:
        a = d.attributes
        source = d.source_subscription or "?"
        if d.source_project and d.source_project != project:
            source = f"{d.source_project}/{source}"
        dead = f"{d.publish_time:%Y-%m-%d %H:%M:%S}" if d.publish_time else "?"
        first = a.get(SOURCE_PUBLISH_TIME, "?").replace("T", " ").split(".")[0]
        rows.append([d.message_id, a.get("execution_id", ""),
                     f"{a.get('scraper_name', '')}\n{a.get('status', '')}", source,
                     str(d.delivery_count or "?"), f"{first}\n{dead}"])
    heads = ["message id", "execution_id", "scraper_name\nstatus", "source subscription",
             "attempts", "first published\ndead-lettered (UTC)"]
    widths = [max(len(line) for cell in [h, *(r[i] for r in rows)] for line in cell.split("\n"))
              for i, h in enumerate(heads)]
    body = min(40, console.width - sum(widths) - 3 * len(heads) - 4)
    table = Table(title=title)
    for i, (head, width) in enumerate(zip(heads, widths, strict=True)):
        wraps = i in (2, 3)  # names may wrap on a narrow terminal; ids and times may not
        table.add_column(head, no_wrap=not wraps, overflow="fold",
                         min_width=None if wraps else width,
                         justify="right" if head == "attempts" else "left")
    if body >= 12:
        table.add_column("body", no_wrap=True, max_width=body)
    for d, row in zip(letters, rows, strict=True):
        table.add_row(*row, *([d.preview(body)] if body >= 12 else []))
    return table


@click.group("dlq")
def dlq() -> None:
    """Dead-lettered messages: list them, re-drive them to their topic."""


@dlq.command("list")
@click.option("--subscription", default=DLQ_SUBSCRIPTION, show_default=True,
              help="The DLQ's pull subscription.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, for scripts.")
@click.pass_context
def list_(ctx: click.Context, subscription: str, limit: int, as_json: bool) -> None:
    """Show dead-lettered messages without consuming them.

    Pub/Sub cannot peek: the messages are pulled, then released (ack
    deadline 0), so they stay in the DLQ. While the command runs, the ones it
    holds are INVISIBLE to other readers of the subscription (a re-drive
    running at the same moment skips them); if it is killed, they reappear
    after the subscription's ack deadline. Delivery attempts and source
    subscription come from the CloudPubSubDeadLetterSource* attributes.
    """
    project = _project(ctx)
    admin = PubSubAdmin(project)
    try:
        _check(admin, subscription)
    finally:
        admin.close()
    source = PubSubDeadLetters(project, subscription)
    try:
        letters = peek(source, limit)
    except OutboxError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # peek released what it held on the way out
        _fail(Exception("interrupted; nothing was consumed"), 130)
    finally:
        source.close()
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in letters]))
        return
    if not letters:
        console.print(f"{subscription}: no dead-lettered messages", highlight=False)
        return
    more = " (limit reached; there may be more)" if len(letters) >= limit else ""
    console.print(_letters_table(letters, f"{subscription}: {len(letters)} dead-lettered "
                                 f"message(s){more}", project))


def _summary_table(s: RedriveSummary, subscription: str, topic: str,
                   filters: Sequence[str]) -> Table:
    state = "dry run: nothing sent" if s.dry_run else "stopped" if s.stopped else "complete"
    table = Table("field", "value", title=f"redrive {s.redrive_id} ({state})")
    for key, value in (
        ("from -> to", f"{subscription} -> {topic}"), ("filters", ", ".join(filters) or "none"),
        ("would redrive" if s.dry_run else "redriven (published, acked)", s.redriven),
        ("failed (left in the DLQ)", len(s.failed)),
        ("published, ack failed (left; re-sent next run)", len(s.unacked)),
        ("not matching (left)", s.not_matching), ("other topic (left)", s.other_topic),
        ("dead-lettered again this run (left)", s.came_back),
        ("seconds", f"{s.seconds:.2f}"),
    ):
        table.add_row(key, str(value))
    return table


@dlq.command("redrive")
@click.option("--subscription", default=DLQ_SUBSCRIPTION, show_default=True,
              help="The DLQ's pull subscription.")
@click.option("--topic", default=SCRAPER_TOPIC, show_default=True,
              help="Where to publish the messages again.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Re-drive at most this many messages (default: all).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only messages with this attribute value (or message_id=ID); repeatable: "
                   "values of one key are OR-ed, different keys AND-ed.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Messages per pull, publish and ack.")
@click.option("--dry-run", is_flag=True, help="Show what would go; publish and ack nothing.")
@click.pass_context
def redrive(ctx: click.Context, subscription: str, topic: str, limit: int | None,
            filters: tuple[str, ...], batch_size: int, dry_run: bool) -> None:
    """Publish dead-lettered messages back to their topic, then ack them.

    Each goes out with its body and original attributes (without the
    CloudPubSubDeadLetter* ones), plus redrive=true and redrive_id. A DLQ
    message is acked only after its re-publish returned a message id; one
    that fails stays in the DLQ and is reported. Messages the filter leaves
    out, and messages dead-lettered from a subscription of another topic,
    stay too. Every subscription of the topic receives the message again, not
    only the one that dead-lettered it.

    Ctrl-C stops after the batch in flight: every message is either
    re-published and acked, or untouched; run again to continue. A second
    Ctrl-C aborts at once; then a message of that batch may be published
    without being acked, and the next run publishes it again (consumers
    dedupe on execution_id).

    Exits 0 when all went, 1 if any failed, 2 for bad input, 130 when interrupted.
    """
    try:
        parsed = parse_filters(filters)
    except DlqInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from exc
    project = _project(ctx)
    admin = PubSubAdmin(project)
    source = PubSubDeadLetters(project, subscription)
    publisher: Publisher | None = None
    try:
        _check(admin, subscription, topic)
        publisher = _publisher(project)
        redriver = Redriver(source, publisher, topic, filters=parsed, limit=limit,
                            batch_size=batch_size, dry_run=dry_run,
                            topic_of=_source_topics(admin))
        code = _run(redriver)
    finally:
        if publisher is not None:
            publisher.close()
        source.close()
        admin.close()
    s = redriver.summary
    if dry_run and s.selected:
        console.print(_letters_table(s.selected, f"would redrive {len(s.selected)} to {topic}",
                                     project))
    console.print(_summary_table(s, subscription, topic, filters))
    problems = [(d, f"publish failed: {e}") for d, e in s.failed]
    problems += [(d, f"published, ack failed: {e}") for d, e in s.unacked]
    if problems:
        table = Table("message id", "execution_id", "problem", title="left in the DLQ")
        for d, why in problems[:50]:
            table.add_row(d.message_id, d.attributes.get("execution_id", ""), why[:200])
        console.print(table)
    if code:
        sys.exit(code)


def _run(redriver: Redriver) -> int:
    stop = threading.Event()
    progress = Progress(TextColumn("[bold]redrive"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[left]} left in the DLQ"), TimeElapsedColumn(),
                        console=console)
    task = progress.add_task("redrive", total=redriver.limit, left=0)

    def on_batch(s: RedriveSummary) -> None:
        left = len(s.failed) + len(s.unacked) + s.not_matching + s.other_topic + s.came_back
        left += len(s.selected)  # --dry-run leaves them too
        progress.update(task, completed=s.redriven, left=left)

    try:
        with progress, graceful_sigint(stop, console.print):
            summary = redriver.run(on_batch, stop.is_set)
    except KeyboardInterrupt:
        console.print("[bold red]aborted:[/] unacked messages stay in the DLQ; a message "
                      "published but not yet acked is published again by the next run")
        return 130
    except OutboxError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    if not summary.ok:
        return 1
    return 130 if summary.stopped else 0

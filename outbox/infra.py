"""``outbox infra``: the platform's Pub/Sub and BigQuery set-up, as data, planned then applied.

Why plan/apply rather than "create if missing": the platform's resources exist
already in real projects, made by hand or by the original scripts with other
settings (an ack deadline of 10 s, no dead-letter policy). Creating only what
is missing would leave those wrong forever. So the desired state below is
compared field by field with what the server reads back, and ``apply`` sends
exactly the differing fields, with update masks. Running it twice changes
nothing the second time.

The diff functions are pure (state in, :class:`Change` out). Reading and
writing live in :mod:`outbox.pubsub_admin` and :mod:`outbox.bigquery_tables`;
:func:`make_plan` and :func:`apply` only connect them. IAM cannot be set on
the emulator, so the bindings are printed as gcloud commands (:func:`iam_commands`).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from google.cloud import bigquery

from outbox.bigquery_tables import (
    TableState,
    dataset_exists,
    ensure_dataset,
    ensure_tables,
    table_differences,
    table_state,
    update_table,
)
from outbox.errors import ConfigError
from outbox.infra_commands import EMAIL_RE, REGION_RE
from outbox.pubsub_admin import (
    NEVER,
    PubSubAdmin,
    SubscriptionState,
    TopicState,
    differences,
    merged,
)
from outbox.routes import PHASE2_COMPLETE, ROUTES, SCRAPER_COMPLETE
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_LEASE, OUTBOX_RUNS, TableSpec, check_project

DAY, HOUR = 86_400, 3_600
SCRAPER_TOPIC = SCRAPER_COMPLETE.topic
DLQ_TOPIC = f"{SCRAPER_TOPIC}-dlq"
DLQ_SUBSCRIPTION = f"{DLQ_TOPIC}-sub"
PROCESSORS_SUBSCRIPTION = "nba-processors-sub"
PROCESSORS_SERVICE = "nba-processors"
MAX_DELIVERY_ATTEMPTS = 5
RETRY_BACKOFF_S = (10, 600)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_RUN_APP = re.compile(r"^[a-z0-9-]+-[0-9]+\.([a-z]+-[a-z]+[0-9]+)\.run\.app$")

Kind = Literal["topic", "subscription", "dataset", "table"]
Action = Literal["create", "update", "ok", "blocked"]


def platform_tables(dataset_suffix: str = "") -> tuple[TableSpec, ...]:
    """Every table of the platform, in one list: the routes' logs, the relay's own
    tables, the processors' ledger and quarantine, and the ``nba_raw`` tables.

    ``dataset_suffix`` moves every table to ``<dataset><suffix>`` (tests, staging).
    Imported here, not at module level, so the CLI loads processors only for infra.
    """
    from processors.dedupe import PROCESSED_EVENTS
    from processors.quarantine import PROCESSOR_QUARANTINE
    from processors.raw.tables import RAW_TABLES

    specs = (*(r.table for r in ROUTES), OUTBOX_JOURNAL, OUTBOX_LEASE, OUTBOX_RUNS,
             PROCESSED_EVENTS, PROCESSOR_QUARANTINE, *(t.spec for t in RAW_TABLES))
    return tuple(s.with_location(s.dataset + dataset_suffix) for s in specs)


@dataclass(frozen=True)
class InfraOptions:
    """What the operator chose; checked on construction, before anything is read or changed."""

    project: str
    push_endpoint: str | None = None
    push_audience: str | None = None
    push_service_account: str | None = None
    project_number: str | None = None
    region: str | None = None
    dataset_suffix: str = ""
    pubsub_emulator: bool = False
    bigquery_emulator: bool = False

    def __post_init__(self) -> None:
        check_project(self.project)
        if self.push_endpoint is not None:
            check_push_endpoint(self.push_endpoint, self.pubsub_emulator)
        if self.push_audience is not None and not self.push_audience.strip():
            raise ConfigError("--push-audience must not be empty")
        if self.push_audience and not self.push_service_account:
            raise ConfigError("--push-audience needs --push-service-account (the token's signer)")
        sa = self.push_service_account
        if sa is not None and not EMAIL_RE.match(sa):
            raise ConfigError(f"--push-service-account {sa!r} is not a service account email")
        if self.project_number is not None and not self.project_number.isdigit():
            raise ConfigError(f"--project-number {self.project_number!r} must be digits only")
        if self.region is not None and not REGION_RE.match(self.region):
            raise ConfigError(f"--region {self.region!r} is not a region such as us-central1")
        if sa and self.invoker_region is None:
            raise ConfigError("--push-service-account needs --region (the processors service's "
                              "region, for its run.invoker binding)")
        platform_tables(self.dataset_suffix)  # TableSpec refuses a bad dataset name

    @property
    def invoker_region(self) -> str | None:
        """--region, else the one in a deterministic Cloud Run URL (``…-NUMBER.REGION.run.app``)."""
        if self.region or not self.push_endpoint:
            return self.region
        match = _RUN_APP.match(urlsplit(self.push_endpoint).hostname or "")
        return match.group(1) if match else None


def check_push_endpoint(url: str, emulator: bool) -> str:
    """Refuse an endpoint Pub/Sub would reject, or one that cannot be the processors.

    Pub/Sub pushes only to https. Plain http is allowed for a loopback host,
    and only against the emulator, which pushes to a local test server.
    """
    parts = urlsplit(url)
    ok_https = parts.scheme == "https" and bool(parts.hostname)
    ok_local = parts.scheme == "http" and parts.hostname in _LOOPBACK
    if not (ok_https or ok_local) or any(c.isspace() for c in url):
        raise ConfigError(f"push endpoint {url!r} must be an https:// URL "
                          "(or http://localhost:PORT/... on the emulator)")
    if ok_local and not emulator:
        raise ConfigError(f"push endpoint {url!r}: http:// is only for a local endpoint on the "
                          "Pub/Sub emulator; the real service pushes only to https://")
    return url


def desired_topics() -> tuple[TopicState, ...]:
    """In creation order: the DLQ topic must exist before a subscription names it."""
    return (
        TopicState(SCRAPER_TOPIC, message_retention_seconds=DAY),
        TopicState(DLQ_TOPIC, message_retention_seconds=7 * DAY),
        TopicState(PHASE2_COMPLETE.topic),  # the design notes give it no retention: unmanaged
    )


def desired_subscriptions(opts: InfraOptions) -> tuple[SubscriptionState, ...]:
    """The DLQ's pull subscription, then the processors' push subscription.

    Both never expire: a subscription with no subscriber activity is deleted
    after the default 31 days, and nobody reads the DLQ on a good month. Push
    settings the operator did not give stay None (unmanaged): an existing
    subscription keeps its endpoint and OIDC token.
    """
    dlq_path = f"projects/{opts.project}/topics/{DLQ_TOPIC}"
    return (
        SubscriptionState(DLQ_SUBSCRIPTION, topic=DLQ_TOPIC, message_retention_seconds=7 * DAY,
                          push_endpoint="", expiration_ttl_seconds=NEVER, filter=""),
        SubscriptionState(
            PROCESSORS_SUBSCRIPTION, topic=SCRAPER_TOPIC, ack_deadline_seconds=600,
            message_retention_seconds=HOUR, push_endpoint=opts.push_endpoint,
            oidc_service_account=opts.push_service_account, oidc_audience=opts.push_audience,
            dead_letter_topic=dlq_path, max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
            retry_min_backoff_seconds=RETRY_BACKOFF_S[0],
            retry_max_backoff_seconds=RETRY_BACKOFF_S[1],
            expiration_ttl_seconds=NEVER, filter=""),
    )


@dataclass(frozen=True)
class FieldDiff:
    field: str
    current: str
    desired: str
    mask: str | None
    """The update-mask path that changes it; None if nothing can change it in place."""


@dataclass(frozen=True)
class Change:
    kind: Kind
    name: str
    action: Action
    diffs: tuple[FieldDiff, ...] = ()
    note: str = ""

    @property
    def mask(self) -> list[str]:
        return sorted({d.mask for d in self.diffs if d.mask})


def _change(kind: Kind, name: str, actual: object | None, diffs: tuple[FieldDiff, ...],
            blocked_note: str = "") -> Change:
    if actual is None:
        return Change(kind, name, "create", diffs)
    if not diffs:
        return Change(kind, name, "ok")
    if any(d.mask is None for d in diffs):
        return Change(kind, name, "blocked", diffs, blocked_note)
    return Change(kind, name, "update", diffs)


def diff_topic(desired: TopicState, actual: TopicState | None) -> Change:
    diffs = tuple(FieldDiff(*d) for d in differences(desired, actual))
    return _change("topic", desired.name, actual, diffs)


def diff_subscription(desired: SubscriptionState, actual: SubscriptionState | None) -> Change:
    diffs = tuple(FieldDiff(*d) for d in differences(desired, actual))
    return _change("subscription", desired.name, actual, diffs,
                   "topic and filter cannot change: delete the subscription and apply again "
                   "(its undelivered messages are lost)")


def diff_table(spec: TableSpec, actual: TableState | None,
               check_partition_filter: bool = True) -> Change:
    name = f"{spec.dataset}.{spec.name}"
    if actual is None:
        where = f", partitioned by {spec.partition_field}" if spec.partition_field else ""
        return Change("table", name, "create", note=f"{len(spec.columns)} columns{where}")
    diffs = tuple(FieldDiff(*d) for d in table_differences(spec, actual, check_partition_filter))
    return _change("table", name, actual, diffs,
                   "needs a migration: BigQuery cannot change this in place")


@dataclass(frozen=True)
class IamCommand:
    command: str
    why: str


def pubsub_service_agent(project: str, project_number: str | None = None) -> str:
    """The Pub/Sub service agent; without a number, a shell substitution that looks it up."""
    number = project_number or f"$(gcloud projects describe {project} " \
                               f"--format='value(projectNumber)')"
    return f"service-{number}@gcp-sa-pubsub.iam.gserviceaccount.com"


def iam_commands(opts: InfraOptions) -> list[IamCommand]:
    """The bindings the set-up needs, as commands to run against the real project.

    Dead-lettering needs the Pub/Sub service agent to publish to the DLQ topic
    *and* to subscribe to the source subscription (to ack what it forwards);
    without both, nothing is dead-lettered and the original scripts forgot it.
    The member is double-quoted so that the shell runs the look-up.
    """
    p = opts.project
    agent = f'--member="serviceAccount:{pubsub_service_agent(p, opts.project_number)}"'
    out = [
        IamCommand(f"gcloud pubsub topics add-iam-policy-binding {DLQ_TOPIC} --project={p} "
                   f"{agent} --role=roles/pubsub.publisher",
                   "the service agent publishes dead letters to the DLQ topic"),
        IamCommand(f"gcloud pubsub subscriptions add-iam-policy-binding "
                   f"{PROCESSORS_SUBSCRIPTION} --project={p} {agent} "
                   f"--role=roles/pubsub.subscriber",
                   "the service agent acks what it dead-letters from the subscription"),
    ]
    sa = opts.push_service_account
    if sa:
        member = shlex.quote(f"serviceAccount:{sa}")
        out += [
            IamCommand(f"gcloud run services add-iam-policy-binding {PROCESSORS_SERVICE} "
                       f"--project={p} --region={opts.invoker_region} --member={member} "
                       f"--role=roles/run.invoker",
                       "the push subscription's identity may call /process"),
            IamCommand(f"gcloud iam service-accounts add-iam-policy-binding {shlex.quote(sa)} "
                       f"--project={p} {agent} --role=roles/iam.serviceAccountTokenCreator",
                       "the service agent signs the push OIDC token as that account "
                       "(needed for projects created before 8 April 2021)"),
        ]
    return out


@dataclass
class Plan:
    project: str
    changes: list[Change] = field(default_factory=list)
    targets: dict[tuple[Kind, str], object] = field(default_factory=dict, repr=False)
    """What apply sends per change it can make: a TopicState, SubscriptionState, TableSpec
    or dataset name."""
    iam: list[IamCommand] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What ``apply`` would refuse to start with (e.g. no push endpoint for a new subscription)."""

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "ok"]

    def as_dict(self) -> dict[str, object]:
        return {
            "project": self.project,
            "pending": len(self.pending),
            "changes": [dataclasses.asdict(c) | {"mask": c.mask} for c in self.changes],
            "problems": self.problems,
            "iam_commands": [dataclasses.asdict(i) for i in self.iam],
        }


def make_plan(opts: InfraOptions, pubsub: PubSubAdmin, bq: bigquery.Client) -> Plan:
    """Read every resource and compare it with the desired state. Changes nothing."""
    plan = Plan(opts.project, iam=iam_commands(opts))
    for topic in desired_topics():
        actual_topic = pubsub.get_topic(topic.name)
        _add(plan, diff_topic(topic, actual_topic), topic)
    for sub in desired_subscriptions(opts):
        actual = pubsub.get_subscription(sub.name)
        if actual is not None and opts.pubsub_emulator:  # it refuses to update this field
            sub = dataclasses.replace(sub, expiration_ttl_seconds=None)
        change = diff_subscription(sub, actual)
        if sub.push_endpoint is None and not (actual and actual.push_endpoint):
            plan.problems.append(f"{sub.name} needs a push endpoint: give --push-endpoint URL "
                                 "(e.g. the nba-processors service URL + /process)")
            need = FieldDiff("push_config.push_endpoint", "pull" if actual else "-",
                             "? (--push-endpoint)", "push_config")
            action: Action = "create" if actual is None else (
                "blocked" if change.action == "blocked" else "update")
            change = dataclasses.replace(change, action=action, diffs=(*change.diffs, need))
        _add(plan, change, sub if actual is None else merged(sub, actual))
    seen: set[str] = set()
    for spec in platform_tables(opts.dataset_suffix):
        if spec.dataset not in seen:
            seen.add(spec.dataset)
            exists = dataset_exists(bq, opts.project, spec.dataset)
            _add(plan, Change("dataset", spec.dataset, "ok" if exists else "create"), spec.dataset)
        actual_table = table_state(bq, opts.project, spec)
        _add(plan, diff_table(spec, actual_table, not opts.bigquery_emulator), spec)
    return plan


def _add(plan: Plan, change: Change, target: object) -> None:
    plan.changes.append(change)
    if change.action in ("create", "update") or change.mask:
        plan.targets[(change.kind, change.name)] = target


@dataclass(frozen=True)
class Done:
    kind: Kind
    name: str
    outcome: str


def apply(plan: Plan, pubsub: PubSubAdmin, bq: bigquery.Client) -> list[Done]:
    """Make the plan's creates and updates, in its order.

    A blocked change still gets the fields that can change in place (a
    filtered subscription gets its dead-letter policy); the rest is reported.
    Refuses to start (ConfigError) while the plan has problems, so a missing
    option never leaves a half-built set-up.
    """
    if plan.problems:
        raise ConfigError("; ".join(plan.problems))
    done = []
    for change in plan.pending:
        target = plan.targets.get((change.kind, change.name))
        outcome = _apply_one(change, target, plan.project, pubsub, bq) if target else ""
        if change.action == "blocked":
            stuck = ", ".join(d.field for d in change.diffs if d.mask is None)
            outcome = "; ".join(filter(None, [outcome, f"blocked: {stuck}"]))
        done.append(Done(change.kind, change.name, outcome))
    return done


def _apply_one(change: Change, target: object, project: str, pubsub: PubSubAdmin,
               bq: bigquery.Client) -> str:
    create = change.action == "create"
    if isinstance(target, TopicState) and create:
        made = pubsub.create_topic(target)
    elif isinstance(target, TopicState):
        pubsub.update_topic(target, change.mask)
    elif isinstance(target, SubscriptionState) and create:
        made = pubsub.create_subscription(target)
    elif isinstance(target, SubscriptionState):
        pubsub.update_subscription(target, change.mask)
    elif isinstance(target, TableSpec) and create:
        made = ensure_tables(bq, project, [target])[-1].created
    elif isinstance(target, TableSpec):
        update_table(bq, project, target, change.mask)
    else:  # a dataset: its name
        made = ensure_dataset(bq, project, str(target))
    if not create:
        return f"updated {', '.join(change.mask)}"
    return "created" if made else "exists (created meanwhile)"

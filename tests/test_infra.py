"""``outbox infra plan/apply``: the diff logic alone, then the whole loop on both emulators.

The emulator tests run on a private Pub/Sub emulator (a fresh, empty project
each) and the session bqemulator under a unique dataset suffix, so they see an
empty project without touching other tests' datasets.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from google.cloud import pubsub_v1
from google.pubsub_v1.types import Subscription
from rich.console import Console

from outbox.bigquery_tables import TableState, column_mode
from outbox.cli_infra import infra
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.errors import ConfigError
from outbox.infra import (
    DLQ_SUBSCRIPTION,
    DLQ_TOPIC,
    PROCESSORS_SUBSCRIPTION,
    SCRAPER_TOPIC,
    Change,
    InfraOptions,
    Plan,
    apply,
    desired_subscriptions,
    desired_topics,
    diff_subscription,
    diff_table,
    diff_topic,
    iam_commands,
    make_plan,
    platform_tables,
)
from outbox.pubsub_admin import (
    DEFAULT_EXPIRATION_TTL_S,
    NEVER,
    PubSubAdmin,
    SubscriptionState,
    TopicState,
    merged,
    show,
    subscription_fields,
    subscription_state,
)
from outbox.schema import OUTBOX_LEASE, SCRAPER_EXECUTION_LOG

TEST_PROJECT = "test-project"  # the session bqemulator's project
P = "nba-props-prod"
DAY_S = 86_400
ENDPOINT = "https://nba-processors-123456789.us-central1.run.app/process"
PUSH_SA = "nba-pubsub-push@nba-props-prod.iam.gserviceaccount.com"
AGENT_LOOKUP = ("service-$(gcloud projects describe nba-props-prod "
                "--format='value(projectNumber)')@gcp-sa-pubsub.iam.gserviceaccount.com")


def opts(**kw: Any) -> InfraOptions:
    return InfraOptions(kw.pop("project", P), **kw)


def as_read_back(desired: SubscriptionState) -> SubscriptionState:
    """What the server reports for a subscription made exactly as desired."""
    defaults: dict[str, Any] = {
        "ack_deadline_seconds": 10, "push_endpoint": "", "oidc_service_account": "",
        "oidc_audience": "", "dead_letter_topic": "", "max_delivery_attempts": 0,
        "retry_min_backoff_seconds": 0, "retry_max_backoff_seconds": 0}
    unset: dict[str, Any] = {f.name: defaults.get(f.name) for f in dataclasses.fields(desired)
                             if getattr(desired, f.name) is None}
    return dataclasses.replace(desired, **unset)


def processors_sub() -> SubscriptionState:
    return as_read_back(desired_subscriptions(opts(push_endpoint=ENDPOINT))[1])


# -- the diff logic, without emulators ------------------------------------------------


def test_topics_create_then_ok_then_update_retention_with_a_mask() -> None:
    scraper = desired_topics()[0]
    created = diff_topic(scraper, None)
    assert created.action == "create"
    assert [(d.field, d.desired) for d in created.diffs] == [("message_retention_duration", "1 d")]
    assert diff_topic(scraper, TopicState(SCRAPER_TOPIC, DAY_S)).action == "ok"
    change = diff_topic(scraper, TopicState(SCRAPER_TOPIC, 7 * DAY_S))
    assert change.action == "update"
    assert [(d.field, d.current, d.desired) for d in change.diffs] == [
        ("message_retention_duration", "7 d", "1 d")]
    assert change.mask == ["message_retention_duration"]


def test_phase2_topic_retention_is_not_managed() -> None:
    phase2 = desired_topics()[2]
    assert diff_topic(phase2, TopicState(phase2.name, 0)).action == "ok"
    assert diff_topic(phase2, TopicState(phase2.name, 3 * DAY_S)).action == "ok"


def test_a_subscription_as_desired_is_ok() -> None:
    desired = desired_subscriptions(opts(push_endpoint=ENDPOINT))
    for sub in desired:
        assert diff_subscription(sub, as_read_back(sub)).action == "ok", sub.name


def test_only_the_ack_deadline_differs() -> None:
    desired = desired_subscriptions(opts(push_endpoint=ENDPOINT))[1]
    actual = dataclasses.replace(processors_sub(), ack_deadline_seconds=10)
    change = diff_subscription(desired, actual)
    assert change.action == "update"
    assert [(d.field, d.current, d.desired) for d in change.diffs] == [
        ("ack_deadline_seconds", "10 s", "600 s")]
    assert change.mask == ["ack_deadline_seconds"]


def test_the_original_scripts_subscription_needs_every_policy() -> None:
    """A push subscription made with defaults: 10 s, 7 days, no DLQ, no retry policy, 31 d TTL."""
    desired = desired_subscriptions(opts(push_endpoint=ENDPOINT))[1]
    actual = SubscriptionState(
        PROCESSORS_SUBSCRIPTION, topic=SCRAPER_TOPIC, ack_deadline_seconds=10,
        message_retention_seconds=7 * DAY_S, push_endpoint="https://old.example.com/process",
        oidc_service_account="", oidc_audience="", dead_letter_topic="", max_delivery_attempts=0,
        retry_min_backoff_seconds=0, retry_max_backoff_seconds=0,
        expiration_ttl_seconds=DEFAULT_EXPIRATION_TTL_S, filter="")
    change = diff_subscription(desired, actual)
    assert change.action == "update"
    assert change.mask == ["ack_deadline_seconds", "dead_letter_policy", "expiration_policy",
                           "message_retention_duration", "push_config", "retry_policy"]
    shown = {d.field: (d.current, d.desired) for d in change.diffs}
    assert shown["message_retention_duration"] == ("7 d", "1 h")
    assert shown["dead_letter_policy.dead_letter_topic"] == ("none", DLQ_TOPIC)
    assert shown["dead_letter_policy.max_delivery_attempts"] == ("0", "5")
    assert shown["retry_policy.minimum_backoff"] == ("none", "10 s")
    assert shown["retry_policy.maximum_backoff"] == ("none", "600 s")
    assert shown["push_config.push_endpoint"] == ("https://old.example.com/process", ENDPOINT)
    assert shown["expiration_policy.ttl"] == ("31 d", "never")


@pytest.mark.parametrize(("field", "value"), [("filter", 'attributes.x = "1"'),
                                              ("topic", "_deleted-topic_")])
def test_filter_or_topic_cannot_change_in_place(field: str, value: str) -> None:
    desired = desired_subscriptions(opts(push_endpoint=ENDPOINT))[1]
    changed: dict[str, Any] = {field: value}
    change = diff_subscription(desired, dataclasses.replace(processors_sub(), **changed))
    assert change.action == "blocked"
    assert [d.mask for d in change.diffs] == [None]
    assert "delete the subscription" in change.note


def test_unset_push_options_keep_the_current_endpoint_and_token() -> None:
    desired = desired_subscriptions(opts())[1]  # no --push-endpoint
    assert desired.push_endpoint is None
    actual = dataclasses.replace(processors_sub(), oidc_service_account=PUSH_SA,
                                 oidc_audience="aud", ack_deadline_seconds=10)
    target = merged(desired, actual)
    assert (target.push_endpoint, target.oidc_service_account, target.oidc_audience) == (
        ENDPOINT, PUSH_SA, "aud")
    assert target.ack_deadline_seconds == 600
    push = subscription_fields(P, target)["push_config"]
    assert push == {"push_endpoint": ENDPOINT,
                    "oidc_token": {"service_account_email": PUSH_SA, "audience": "aud"}}


def test_a_new_service_account_replaces_the_token() -> None:
    desired = desired_subscriptions(opts(push_endpoint=ENDPOINT, push_service_account=PUSH_SA))[1]
    change = diff_subscription(desired, processors_sub())
    assert [(d.field, d.current, d.desired) for d in change.diffs] == [
        ("push_config.oidc_token.service_account_email", "none", PUSH_SA)]
    assert change.mask == ["push_config"]


def test_read_back_maps_the_apis_unset_values() -> None:
    plain = subscription_state(Subscription(
        name=f"projects/{P}/subscriptions/s-1", topic=f"projects/{P}/topics/t-1",
        ack_deadline_seconds=10))
    assert (plain.push_endpoint, plain.dead_letter_topic, plain.retry_min_backoff_seconds,
            plain.expiration_ttl_seconds, plain.topic) == ("", "", 0, DEFAULT_EXPIRATION_TTL_S,
                                                           "t-1")
    never = subscription_state(Subscription(name="projects/p/subscriptions/s-1",
                                            topic="projects/p/topics/t-1",
                                            expiration_policy={}))
    assert never.expiration_ttl_seconds == NEVER


@pytest.mark.parametrize(("attr", "value", "text"), [
    ("ack_deadline_seconds", 600, "600 s"), ("message_retention_seconds", 3600, "1 h"),
    ("message_retention_seconds", 0, "none"), ("expiration_ttl_seconds", 0, "never"),
    ("push_endpoint", "", "pull"), ("dead_letter_topic", f"projects/{P}/topics/x-y", "x-y"),
    ("filter", "", "none"), ("topic", None, "-"),
])
def test_show(attr: str, value: object, text: str) -> None:
    assert show(attr, value) == text


def _state(spec: Any, **kw: Any) -> TableState:
    base = TableState(
        columns=tuple((c.name, c.type, column_mode(c)) for c in spec.columns),
        partition_field=spec.partition_field,
        partition_expiration_ms=spec.expiration_days * 86_400_000 if spec.expiration_days
        else None,
        clustering=spec.clustering, require_partition_filter=spec.require_partition_filter)
    return dataclasses.replace(base, **kw)


def test_tables_create_ok_and_in_place_updates() -> None:
    spec = SCRAPER_EXECUTION_LOG
    assert diff_table(spec, None).action == "create"
    assert diff_table(spec, _state(spec)).action == "ok"
    actual = _state(spec, columns=_state(spec).columns[:-2], clustering=("scraper_name",),
                    partition_expiration_ms=30 * 86_400_000, require_partition_filter=None)
    change = diff_table(spec, actual)
    assert change.action == "update"
    assert change.mask == ["clustering_fields", "require_partition_filter", "schema",
                           "time_partitioning"]
    shown = {d.field: (d.current, d.desired) for d in change.diffs}
    assert shown["schema"] == ("-", "add published, published_at")
    assert shown["partition_expiration"] == ("30 d", "90 d")


def test_bqemulator_does_not_store_the_partition_filter() -> None:
    actual = _state(SCRAPER_EXECUTION_LOG, require_partition_filter=None)
    assert diff_table(SCRAPER_EXECUTION_LOG, actual, check_partition_filter=False).action == "ok"
    assert diff_table(SCRAPER_EXECUTION_LOG, actual).action == "update"


@pytest.mark.parametrize("broken", [
    {"columns": (("route", "INT64", "REQUIRED"),)},  # type changed
    {"columns": ()},  # a REQUIRED column is missing: cannot be added
    {"partition_field": "acquired_at"},
])
def test_tables_that_need_a_migration_are_blocked(broken: dict[str, Any]) -> None:
    spec = OUTBOX_LEASE
    actual = _state(spec, **broken)
    if broken.get("columns"):
        actual = dataclasses.replace(actual, columns=(*broken["columns"],
                                                      *_state(spec).columns[1:]))
    change = diff_table(spec, actual)
    assert change.action == "blocked"
    assert "migration" in change.note


def test_platform_tables_list_every_table_once_and_move_with_the_suffix() -> None:
    names = [f"{s.dataset}.{s.name}" for s in platform_tables()]
    assert len(names) == len(set(names))
    assert "nba_orchestration.scraper_execution_log" in names
    assert "nba_orchestration.outbox_lease" in names
    assert "nba_raw.bdl_games" in names
    assert {s.dataset for s in platform_tables("_t1")} == {"nba_orchestration_t1", "nba_raw_t1"}


class _FakeAdmin:
    def __init__(self, topics: list[TopicState], subs: list[SubscriptionState]) -> None:
        self.topics = {t.name: t for t in topics}
        self.subs = {s.name: s for s in subs}

    def get_topic(self, name: str) -> TopicState | None:
        return self.topics.get(name)

    def get_subscription(self, name: str) -> SubscriptionState | None:
        return self.subs.get(name)


def test_plan_of_an_old_filtered_pull_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint to keep or give: a problem; the filter: blocked; the rest: in place."""
    monkeypatch.setattr("outbox.infra.dataset_exists", lambda *_: True)
    monkeypatch.setattr("outbox.infra.table_state", lambda _c, _p, spec: _state(spec))
    topics = [dataclasses.replace(t, message_retention_seconds=t.message_retention_seconds or 0)
              for t in desired_topics()]
    dlq, proc = (as_read_back(s) for s in desired_subscriptions(opts(push_endpoint=ENDPOINT)))
    old = dataclasses.replace(proc, push_endpoint="", filter='attributes.a = "b"',
                              ack_deadline_seconds=10)
    plan = make_plan(opts(), _FakeAdmin(topics, [dlq, old]), None)  # type: ignore[arg-type]
    [change] = plan.pending
    assert change.name == PROCESSORS_SUBSCRIPTION and change.action == "blocked"
    assert change.mask == ["ack_deadline_seconds", "push_config"]
    assert [d.field for d in change.diffs if d.mask is None] == ["filter"]
    assert plan.problems and "--push-endpoint" in plan.problems[0]
    assert plan.as_dict()["pending"] == 1


# -- input checks and IAM commands ----------------------------------------------------


@pytest.mark.parametrize(("kw", "message"), [
    ({"project": "Bad_Project"}, "project id"),
    ({"push_endpoint": "http://example.com/process"}, "https://"),
    ({"push_endpoint": "ftp://example.com/process"}, "https://"),
    ({"push_endpoint": "https:///process"}, "https://"),
    ({"push_endpoint": "example.com/process"}, "https://"),
    ({"push_endpoint": "https://exa mple.com/p"}, "https://"),
    ({"push_endpoint": "http://localhost:8080/process"}, "only for a local endpoint"),
    ({"push_audience": "aud"}, "needs --push-service-account"),
    ({"push_service_account": "not-an-email", "region": "us-central1"}, "service account"),
    ({"push_service_account": PUSH_SA, "push_endpoint": "https://x.example.com/p"}, "--region"),
    ({"project_number": "12ab"}, "digits"),
    ({"region": "Mars"}, "region"),
    ({"dataset_suffix": "-x"}, "identifier"),
])
def test_bad_input_is_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        opts(**kw)


def test_localhost_is_fine_on_the_emulator() -> None:
    o = opts(push_endpoint="http://localhost:8080/process", pubsub_emulator=True)
    assert o.push_endpoint == "http://localhost:8080/process"
    assert opts(push_endpoint="http://127.0.0.1:9/p", pubsub_emulator=True)


def test_iam_gives_the_service_agent_both_roles() -> None:
    cmds = [c.command for c in iam_commands(opts())]
    assert cmds == [
        f"gcloud pubsub topics add-iam-policy-binding {DLQ_TOPIC} --project={P} "
        f'--member="serviceAccount:{AGENT_LOOKUP}" --role=roles/pubsub.publisher',
        f"gcloud pubsub subscriptions add-iam-policy-binding {PROCESSORS_SUBSCRIPTION} "
        f'--project={P} --member="serviceAccount:{AGENT_LOOKUP}" --role=roles/pubsub.subscriber',
    ]


def test_iam_with_a_project_number_and_a_push_identity() -> None:
    o = opts(project_number="123456789", push_endpoint=ENDPOINT, push_service_account=PUSH_SA)
    assert o.invoker_region == "us-central1"  # read from the deterministic run.app URL
    cmds = [c.command for c in iam_commands(o)]
    agent = "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert all(agent in c for c in (cmds[0], cmds[1], cmds[3]))
    assert cmds[2] == (f"gcloud run services add-iam-policy-binding nba-processors --project={P} "
                       f"--region=us-central1 --member=serviceAccount:{PUSH_SA} "
                       "--role=roles/run.invoker")
    assert "roles/iam.serviceAccountTokenCreator" in cmds[3]
    assert opts(region="europe-west1", push_service_account=PUSH_SA).invoker_region \
        == "europe-west1"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_iam_commands_are_valid_shell() -> None:
    o = opts(push_endpoint=ENDPOINT, push_service_account=PUSH_SA)
    script = "\n".join(c.command for c in iam_commands(o))
    subprocess.run(["bash", "-n", "-c", script], check=True)


class _Refuses:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"apply called {name} although the plan has problems")


def test_apply_refuses_a_plan_with_problems_before_any_call() -> None:
    plan = Plan(P, changes=[Change("topic", SCRAPER_TOPIC, "create")],
                problems=["nba-processors-sub needs a push endpoint"])
    with pytest.raises(ConfigError, match="push endpoint"):
        apply(plan, _Refuses(), _Refuses())  # type: ignore[arg-type]


def test_bad_options_exit_2_before_any_client_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("outbox.cli_infra.PubSubAdmin", _Refuses)
    monkeypatch.setattr("outbox.cli_infra.bigquery_client", _Refuses)
    for args, message in ((["apply", "--push-endpoint", "http://example.com/p"], "https://"),
                          (["plan", "--project-number", "x1"], "digits")):
        result = CliRunner().invoke(infra, args, obj={"project": P})
        assert result.exit_code == 2, result.output
        assert message in result.output
    result = CliRunner().invoke(infra, ["plan"], obj={"project": "Not_A_Project"})
    assert result.exit_code == 2
    assert "not a valid Google Cloud project id" in result.output


# -- on the emulators -----------------------------------------------------------------


@pytest.fixture
def emulated(start_emulator: Callable[[PubSubEmulator], PubSubEmulator],
             bq_emulator: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch,
             ) -> Iterator[tuple[InfraOptions, PubSubAdmin, Any]]:
    """An empty project: a private Pub/Sub emulator, bqemulator under a fresh dataset suffix."""
    from outbox.wiring import Settings, bigquery_client

    pubsub = start_emulator(PubSubEmulator(TEST_PROJECT))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host)
    for key, value in bq_emulator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OUTBOX_PROJECT", TEST_PROJECT)
    monkeypatch.setattr("outbox.cli.console", Console(width=200))
    suffix = f"_infra_{uuid.uuid4().hex[:8]}"
    o = InfraOptions(TEST_PROJECT, push_endpoint="http://localhost:8080/process",
                     dataset_suffix=suffix, pubsub_emulator=True, bigquery_emulator=True)
    admin, bq = PubSubAdmin(TEST_PROJECT), bigquery_client(Settings.from_env())
    try:
        yield o, admin, bq
    finally:
        admin.close()
        bq.close()


def _cli(args: list[str], suffix: str) -> Result:
    return CliRunner().invoke(infra, [*args, "--dataset-suffix", suffix],
                              obj={"project": TEST_PROJECT})


@pytest.mark.emulator
def test_plan_apply_and_a_second_plan_is_empty(
        emulated: tuple[InfraOptions, PubSubAdmin, Any]) -> None:
    o, admin, bq = emulated
    first = make_plan(o, admin, bq)
    n_tables = len(platform_tables())
    assert [c.action for c in first.changes] == ["create"] * (5 + 2 + n_tables)
    assert first.problems == []

    result = _cli(["apply", "--push-endpoint", "http://localhost:8080/process"], o.dataset_suffix)
    assert result.exit_code == 0, result.output
    assert result.output.count("created") == 5 + 2 + n_tables
    assert "roles/pubsub.publisher" in result.output
    assert "roles/pubsub.subscriber" in result.output

    assert make_plan(o, admin, bq).pending == []
    again = _cli(["plan", "--json"], o.dataset_suffix)
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["pending"] == 0 and data["problems"] == []
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in data["iam_commands"][0]["command"]

    sub = admin.get_subscription(PROCESSORS_SUBSCRIPTION)  # what the emulator stored
    assert sub is not None
    assert (sub.ack_deadline_seconds, sub.message_retention_seconds, sub.max_delivery_attempts,
            sub.retry_min_backoff_seconds, sub.retry_max_backoff_seconds,
            sub.expiration_ttl_seconds) == (600, 3600, 5, 10, 600, NEVER)
    assert sub.dead_letter_topic == f"projects/{TEST_PROJECT}/topics/{DLQ_TOPIC}"
    assert admin.get_topic(DLQ_TOPIC) == TopicState(DLQ_TOPIC, 7 * DAY_S)
    dlq_sub = admin.get_subscription(DLQ_SUBSCRIPTION)
    assert dlq_sub is not None and dlq_sub.push_endpoint == ""


@pytest.mark.emulator
def test_out_of_band_changes_are_planned_exactly_and_fixed(
        emulated: tuple[InfraOptions, PubSubAdmin, Any]) -> None:
    o, admin, bq = emulated
    apply(make_plan(o, admin, bq), admin, bq)
    client = pubsub_v1.SubscriberClient()
    path = client.subscription_path(TEST_PROJECT, PROCESSORS_SUBSCRIPTION)
    client.update_subscription(request={"subscription": {"name": path, "ack_deadline_seconds": 10},
                                        "update_mask": {"paths": ["ack_deadline_seconds"]}})
    client.close()

    result = _cli(["plan"], o.dataset_suffix)
    assert result.exit_code == 0, result.output
    assert "ack_deadline_seconds: 10 s -> 600 s" in result.output
    plan = make_plan(o, admin, bq)
    [change] = plan.pending
    assert (change.kind, change.name, change.action) == (
        "subscription", PROCESSORS_SUBSCRIPTION, "update")
    assert [(d.field, d.current, d.desired) for d in change.diffs] == [
        ("ack_deadline_seconds", "10 s", "600 s")]

    done = apply(plan, admin, bq)
    assert [(d.name, d.outcome) for d in done] == [
        (PROCESSORS_SUBSCRIPTION, "updated ack_deadline_seconds")]
    assert make_plan(o, admin, bq).pending == []

    # a new endpoint and push identity: one push_config update that keeps everything else
    moved = dataclasses.replace(o, push_endpoint="http://127.0.0.1:9090/process",
                                push_service_account="push@test-project.iam.gserviceaccount.com",
                                region="us-central1")
    [change] = make_plan(moved, admin, bq).pending
    assert change.mask == ["push_config"]
    apply(make_plan(moved, admin, bq), admin, bq)
    sub = admin.get_subscription(PROCESSORS_SUBSCRIPTION)
    assert sub is not None
    assert (sub.push_endpoint, sub.oidc_service_account, sub.ack_deadline_seconds) == (
        "http://127.0.0.1:9090/process", "push@test-project.iam.gserviceaccount.com", 600)
    assert make_plan(dataclasses.replace(moved, push_endpoint=None), admin, bq).pending == []


@pytest.mark.emulator
def test_missing_endpoint_and_a_filter_are_refused_or_blocked(
        emulated: tuple[InfraOptions, PubSubAdmin, Any]) -> None:
    o, admin, bq = emulated
    no_endpoint = dataclasses.replace(o, push_endpoint=None)
    result = _cli(["apply"], o.dataset_suffix)
    assert result.exit_code == 1
    assert "--push-endpoint" in result.output
    plan = make_plan(no_endpoint, admin, bq)
    assert all(c.action == "create" for c in plan.changes)  # nothing was made
    bad = _cli(["apply", "--push-endpoint", "ftp://x/y"], o.dataset_suffix)
    assert bad.exit_code == 2 and admin.get_topic(SCRAPER_TOPIC) is None

    admin.create_topic(TopicState(SCRAPER_TOPIC))  # the old way: filtered, no retention
    client = pubsub_v1.SubscriberClient()
    client.create_subscription(request={
        "name": client.subscription_path(TEST_PROJECT, PROCESSORS_SUBSCRIPTION),
        "topic": f"projects/{TEST_PROJECT}/topics/{SCRAPER_TOPIC}",
        "filter": 'attributes.status = "success"',
        "push_config": {"push_endpoint": "http://localhost:7/process"}})
    client.close()
    result = _cli(["apply"], o.dataset_suffix)
    assert result.exit_code == 1, result.output  # the blocked subscription is still pending
    assert "1 change(s) still pending" in result.output
    assert "nba-processors-sub" in result.output
    [left] = make_plan(no_endpoint, admin, bq).pending
    assert left.action == "blocked" and [d.field for d in left.diffs] == ["filter"]
    assert admin.get_topic(SCRAPER_TOPIC) == TopicState(SCRAPER_TOPIC, DAY_S)

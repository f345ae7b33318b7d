"""Backfill replay (issue 6, part 1): the engine on in-memory doubles, the
command's checks, and a replay on both emulators."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from click.testing import CliRunner, Result
from sqlglot import exp

from outbox import cli_replay
from outbox.cli_replay import replay
from outbox.ports import JournalEntry, Message, PublishOutcome
from outbox.replay import (
    Checkpoint,
    CheckpointFile,
    PublisherUnavailable,
    Replayer,
    ReplayQuery,
    mismatch,
)
from outbox.replay_bigquery import replay_statement
from outbox.routes import SCRAPER_COMPLETE, Route
from outbox.samples import scraper_row
from outbox.testing import (
    InMemoryOutboxStore,
    InMemoryPublisher,
    InMemoryReplaySource,
    SimulatedCrash,
)

TODAY = dt.datetime.now(dt.UTC).date()
D1, D2 = TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)
ROUTE = SCRAPER_COMPLETE


def at(day: dt.date, hour: int = 12, micro: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, microsecond=micro), dt.UTC)


def rows(n: int, day: dt.date = D1, seed: int = 1, **overrides: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [scraper_row(rng, at(day), **{"execution_id": f"{day:%m%d}-{seed}-{i:04d}",
                                          "triggered_at": at(day) + dt.timedelta(seconds=i),
                                          **overrides})
            for i in range(n)]


def store_with(*batches: list[dict[str, Any]]) -> InMemoryOutboxStore:
    store = InMemoryOutboxStore()
    for batch in batches:
        store.append(batch)
    return store


def query(**kw: Any) -> ReplayQuery:
    return ReplayQuery(**{"route": "scrapers", "since": D1, "until": D2, **kw})


def replayer(store: InMemoryOutboxStore, pub: Any, **kw: Any) -> Replayer:
    return Replayer(ROUTE, InMemoryReplaySource(store.rows, ROUTE), pub, **kw)


def run(store: InMemoryOutboxStore, pub: Any, q: ReplayQuery | None = None,
        **kw: Any) -> tuple[Checkpoint, list[Message]]:
    cp = Checkpoint.new(q or query())
    replayer(store, pub, **kw).run(cp, lambda c: None)
    return cp, [s.message for s in pub.sent]


# -- messages ---------------------------------------------------------------------------

def test_replayed_messages_keep_key_and_body_and_carry_the_replay_attributes() -> None:
    store = store_with(rows(6))
    store.rows[0]["published"] = True  # replay ignores the flag
    cp, sent = run(store, InMemoryPublisher())
    assert [m.key for m in sent] == [r["execution_id"] for r in store.rows]
    for row, message in zip(store.rows, sent, strict=True):
        original = ROUTE.encoder(row)
        assert message.data == original.data
        assert message.attributes == {**original.attributes, "replay": "true",
                                      "replay_id": cp.replay_id}
    assert uuid.UUID(cp.replay_id)


def test_force_adds_force_true() -> None:
    _, sent = run(store_with(rows(2)), InMemoryPublisher(), query(force=True))
    assert {m.attributes["force"] for m in sent} == {"true"}


def test_window_is_whole_utc_days_and_filters_apply() -> None:
    edge = [
        *rows(1, D1 - dt.timedelta(days=1), seed=9, triggered_at=at(D1, 0) - dt.timedelta(
            microseconds=1)),                                        # just before: out
        *rows(1, D1, seed=2, triggered_at=at(D1, 0)),               # first instant: in
        *rows(1, D2, seed=3, triggered_at=at(D2, 23, 999_999).replace(minute=59, second=59)),
        *rows(1, TODAY, seed=4, triggered_at=at(TODAY, 0)),         # next midnight: out
    ]
    store = store_with(edge)
    _, sent = run(store, InMemoryPublisher())
    assert [m.key for m in sent] == [edge[1]["execution_id"], edge[2]["execution_id"]]

    store = store_with(rows(3, scraper_name="bdl_games_scraper", status="success"),
                       rows(3, seed=5, scraper_name="bdl_games_scraper", status="failed"),
                       rows(3, seed=6, scraper_name="oddsa_player_props", status="failed"))
    _, sent = run(store, InMemoryPublisher(),
                  query(names=("bdl_games_scraper",), statuses=("failed",)))
    assert [m.key for m in sent] == [f"{D1:%m%d}-5-{i:04d}" for i in range(3)]


def test_the_live_outbox_is_left_alone() -> None:
    store = store_with(rows(8))
    store.record([JournalEntry(r["execution_id"], r["triggered_at"], "published", "run-1")
                  for r in store.rows[:4]])
    store.fold(at(D1, 0))
    before_rows, before_journal = copy.deepcopy(store.rows), list(store.journal)
    _, sent = run(store, InMemoryPublisher())
    assert len(sent) == 8
    assert store.rows == before_rows and store.journal == before_journal and store.runs == []


# -- pacing -----------------------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recording:
    """Wraps a publisher; notes (time, size) of every call, or fails on call N."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.monotonic,
                 crash_on: int = 0, crash_after_send: bool = True,
                 exc: type[BaseException] = SimulatedCrash) -> None:
        self.inner, self.clock = inner, clock
        self.calls: list[tuple[float, int]] = []
        self.crash_on, self.after_send, self.exc = crash_on, crash_after_send, exc

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        self.calls.append((self.clock(), len(messages)))
        crash = len(self.calls) == self.crash_on
        if crash and not self.after_send:
            raise self.exc("before send")
        out: list[PublishOutcome] = self.inner.publish(topic, messages)
        if crash:
            raise self.exc("after send, before the checkpoint")
        return out

    def close(self) -> None:
        self.inner.close()


def test_rate_limit_paces_the_batches_without_sleeping() -> None:
    t = FakeTime()
    pub = Recording(InMemoryPublisher(), t.clock)
    summary = replayer(store_with(rows(95)), pub, rate=10, clock=t.clock,
                       sleep=t.sleep).run(Checkpoint.new(query()), lambda c: None)
    assert summary.sent == 95 and max(n for _, n in pub.calls) == 10  # batches of ~1 s
    total = 0
    for when, n in pub.calls:  # never more than one burst plus rate x elapsed
        total += n
        assert total <= 10 + 10 * when + 1e-9
    assert sum(t.sleeps) == pytest.approx(8.5) and summary.seconds == pytest.approx(8.5)


def test_without_a_rate_nothing_waits() -> None:
    t = FakeTime()
    replayer(store_with(rows(50)), InMemoryPublisher(), batch_size=7, clock=t.clock,
             sleep=t.sleep).run(Checkpoint.new(query()), lambda c: None)
    assert t.sleeps == []


# -- resume -----------------------------------------------------------------------------

@pytest.mark.parametrize("after_send", [True, False], ids=["crash-after-send", "crash-before"])
def test_resume_after_a_crash_sends_the_remainder_once(tmp_path: Path, after_send: bool) -> None:
    store, inner = store_with(rows(25)), InMemoryPublisher()
    file = CheckpointFile(tmp_path / "cp.json")
    cp = Checkpoint.new(query())
    file.save(cp)
    with pytest.raises(SimulatedCrash):
        replayer(store, Recording(inner, crash_on=3, crash_after_send=after_send),
                 batch_size=5).run(cp, file.save)
    saved = file.load()
    assert saved.sent == 10 and saved.cursor == (store.rows[9]["triggered_at"],
                                                 store.rows[9]["execution_id"])
    summary = replayer(store, inner, batch_size=5).run(saved, file.save)  # a new process
    assert summary.skipped == 10 and summary.sent == 15 and file.load().done
    counts = inner.counts()
    ids = [r["execution_id"] for r in store.rows]
    assert set(counts) == set(ids)
    resent = {k for k, n in counts.items() if n > 1}
    assert resent == (set(ids[10:15]) if after_send else set()), "at most the batch in flight"
    assert {s.message.attributes["replay_id"] for s in inner.sent} == {cp.replay_id}


def test_a_stop_between_batches_resends_nothing(tmp_path: Path) -> None:
    store, pub = store_with(rows(20)), InMemoryPublisher()
    file, cp = CheckpointFile(tmp_path / "cp.json"), Checkpoint.new(query())
    batches = iter(range(100))
    first = replayer(store, pub, batch_size=4).run(cp, file.save, stop=lambda: next(batches) == 1)
    assert not first.done and first.sent == 8
    second = replayer(store, pub, batch_size=4).run(file.load(), file.save)
    assert second.done and second.skipped == 8 and set(pub.counts().values()) == {1}
    again = replayer(store, pub, batch_size=4).run(file.load(), file.save)
    assert again.sent == 0 and again.skipped == 20 and len(pub.sent) == 20


def test_transient_failures_are_retried_then_the_replay_stops_where_it_was() -> None:
    store, pub = store_with(rows(6)), InMemoryPublisher()
    pub.faults.fail_publishes = {2}
    t = FakeTime()
    cp, sent = run(store, pub, batch_size=3, clock=t.clock, sleep=t.sleep)
    assert len(sent) == 6 and cp.failed == 0 and t.sleeps == [1.0]
    pub.faults.unavailable = 3
    cp = Checkpoint.new(query())
    with pytest.raises(PublisherUnavailable):
        replayer(store, pub, batch_size=3, sleep=t.sleep).run(cp, lambda c: None)
    assert cp.cursor is None and cp.sent == 0


def test_permanent_failures_are_counted_and_passed() -> None:
    store, pub = store_with(rows(5)), InMemoryPublisher()
    bad = store.rows[1]["execution_id"]
    pub.faults.reject_keys = {bad}
    cp, sent = run(store, pub, batch_size=2)
    assert len(sent) == 4 and cp.failed == 1 and cp.failed_ids == [bad] and cp.done


def test_checkpoint_round_trips_and_names_differences(tmp_path: Path) -> None:
    cp = Checkpoint.new(query(names=("bdl_games_scraper",)))
    cp.cursor, cp.sent = (at(D1, micro=123), "x"), 3
    file = CheckpointFile(tmp_path / "deep" / "cp.json")
    file.save(cp)
    assert file.load() == cp and [p.name for p in tmp_path.joinpath("deep").iterdir()] == [
        "cp.json"]
    assert mismatch(cp.query, query(names=("bdl_games_scraper",))) == []
    assert [d.split(":")[0] for d in mismatch(cp.query, query(until=TODAY, force=True))] == [
        "until", "names", "force"]


# -- SQL ----------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [100, None], ids=["page", "count"])
@pytest.mark.parametrize("q,after", [
    (query(), None),
    (query(names=("a_b",), statuses=("failed",)), (at(D1), "abc")),
])
def test_replay_sql_is_partition_filtered_and_parameterised(
        q: ReplayQuery, after: Any, limit: int | None) -> None:
    stmt = replay_statement("p-proj", ROUTE, q, q.window(), after, limit)
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    where = tree.args["where"]
    assert {"triggered_at"} <= {c.name for c in where.find_all(exp.Column)}
    assert not [lit for lit in tree.find_all(exp.Literal) if lit.is_string]
    assert {f"@{p.name}" for p in stmt.params} == set(
        w for w in stmt.sql.replace("(", " ").replace(")", " ").split() if w.startswith("@"))
    assert ("IN UNNEST(@names)" in stmt.sql) == bool(q.names)
    assert "published" not in stmt.sql.replace("c.published", "")  # never filtered on it


# -- the command --------------------------------------------------------------------------

def invoke(args: list[str], connect: Callable[..., Any] | None = None,
           monkeypatch: pytest.MonkeyPatch | None = None, obj: Any = None) -> Result:
    if monkeypatch is not None:
        def refuse(*a: Any) -> Any:
            raise AssertionError("a client was built for a bad request")
        monkeypatch.setattr(cli_replay, "_connect", connect or refuse)
    return CliRunner().invoke(replay, args, obj=obj or {"project": "test-project"})


def window(since: dt.date = D1, until: dt.date = D2) -> list[str]:
    return ["--since", str(since), "--until", str(until)]


def fake_connect(store: InMemoryOutboxStore, pub: Any) -> Callable[..., Any]:
    return lambda settings, route: (InMemoryReplaySource(store.rows, route), lambda: pub)


def test_cli_dry_run_counts_and_sends_nothing(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    store, pub = store_with(rows(7)), InMemoryPublisher()
    monkeypatch.chdir(tmp_path)
    result = invoke([*window(), "--dry-run"], fake_connect(store, pub), monkeypatch)
    assert result.exit_code == 0, result.output
    assert "rows to send" in result.output and "│ 7" in result.output
    assert pub.sent == [] and list(tmp_path.iterdir()) == []


def test_cli_run_shows_a_summary_and_leaves_a_done_checkpoint(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store, pub = store_with(rows(12)), InMemoryPublisher()
    path = tmp_path / "cp.json"
    result = invoke([*window(), "--checkpoint", str(path), "--batch-size", "5", "--rate",
                     "1000/s"], fake_connect(store, pub), monkeypatch)
    assert result.exit_code == 0, result.output
    saved = json.loads(path.read_text())
    assert saved["done"] and saved["sent"] == 12 and len(pub.sent) == 12
    for label in ("replay_id", saved["replay_id"], "sent", "skipped (already sent)",
                  "seconds", "12 rows to nba-scraper-complete"):
        assert label in result.output


def test_cli_interrupted_then_resumed_with_the_same_replay_id(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store, inner = store_with(rows(20)), InMemoryPublisher()
    path = tmp_path / "cp.json"
    aborting = Recording(inner, crash_on=3, exc=KeyboardInterrupt)
    first = invoke([*window(), "--checkpoint", str(path), "--batch-size", "4"],
                   fake_connect(store, aborting), monkeypatch)
    assert first.exit_code == 130, first.output
    assert f"--resume-file {path}" in first.output
    replay_id = json.loads(path.read_text())["replay_id"]
    second = invoke([*window(), "--resume-file", str(path), "--batch-size", "4"],
                    fake_connect(store, inner), monkeypatch)
    assert second.exit_code == 0, second.output
    counts = inner.counts()
    assert len(counts) == 20 and sum(counts.values()) == 24  # the aborted batch, again
    assert {s.message.attributes["replay_id"] for s in inner.sent} == {replay_id}


def test_cli_first_ctrl_c_finishes_the_batch_so_resume_resends_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store, inner = store_with(rows(20)), InMemoryPublisher()
    path = tmp_path / "cp.json"

    class CtrlC(Recording):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
            if len(self.calls) == 1:  # during the second batch
                os.kill(os.getpid(), signal.SIGINT)
            return super().publish(topic, messages)

    first = invoke([*window(), "--checkpoint", str(path), "--batch-size", "4"],
                   fake_connect(store, CtrlC(inner)), monkeypatch)
    assert first.exit_code == 130 and "stopping after the batch in flight" in first.output
    assert json.loads(path.read_text())["sent"] == 8
    second = invoke([*window(), "--resume-file", str(path)], fake_connect(store, inner),
                    monkeypatch)
    assert second.exit_code == 0 and "skipped (already sent) │ 8 " in second.output
    assert len(inner.counts()) == 20 and set(inner.counts().values()) == {1}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_refuses_to_resume_with_other_parameters(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    CheckpointFile(path).save(Checkpoint.new(query()))
    result = invoke([*window(), "--resume-file", str(path), "--status", "failed"],
                    monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "refusing to resume" in result.output
    assert "statuses: checkpoint [] != command ['failed']" in result.output


def test_cli_force_warns_and_help_says_dedupe_is_bypassed(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    store, pub = store_with(rows(2)), InMemoryPublisher()
    monkeypatch.chdir(tmp_path)
    result = invoke([*window(), "--force"], fake_connect(store, pub), monkeypatch)
    assert result.exit_code == 0, result.output
    assert "warning: --force" in result.output and "bypass their dedupe" in result.output
    assert "BYPASS their dedupe" in CliRunner().invoke(replay, ["--help"]).output


def test_cli_rows_that_fail_for_good_exit_1(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    store, pub = store_with(rows(3)), InMemoryPublisher()
    pub.faults.reject_keys = {store.rows[0]["execution_id"]}
    monkeypatch.chdir(tmp_path)
    result = invoke(window(), fake_connect(store, pub), monkeypatch)
    assert result.exit_code == 1 and "1 rows failed for good" in result.output


def test_cli_warns_about_expired_days_and_unchecked_processor_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_with(rows(2))
    result = invoke([*window(TODAY - dt.timedelta(days=95), TODAY - dt.timedelta(days=10)),
                     "--route", "processors", "--scraper", "bdl_games", "--dry-run"],
                    fake_connect(store, InMemoryPublisher()), monkeypatch)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"partitions before {TODAY - dt.timedelta(days=89)} have expired" in text
    assert "no registry of processor_name values: bdl_games not checked" in text


NOT_A_CHECKPOINT = "not-a-checkpoint.json"


@pytest.mark.parametrize("args,message", [
    (window(D2, D1), "is after --until"),
    (window(TODAY + dt.timedelta(days=1), TODAY + dt.timedelta(days=2)), "the window is empty"),
    (window(TODAY - dt.timedelta(days=95), TODAY - dt.timedelta(days=91)), "have expired"),
    (window(TODAY - dt.timedelta(days=90), TODAY), "keeps 90 days"),
    ([*window(), "--scraper", "no_such_scraper"], "unknown scraper 'no_such_scraper'"),
    ([*window(), "--route", "nope"], "unknown route 'nope'"),
    ([*window(), "--rate", "0"], "more than 0"),
    ([*window(), "--rate", "-5/s"], "more than 0"),
    ([*window(), "--rate", "fast"], "messages per second"),
    ([*window(), "--status", "exploded"], "unknown status 'exploded'"),
    ([*window(), "--route", "processors", "--status", "partial"], "unknown status 'partial'"),
    ([*window(), "--route", "processors", "--scraper", "Bad-Name"], "not a snake_case"),
    (["--since", "2026-13-01", "--until", str(D2)], "Invalid value for '--since'"),
    (["--until", str(D2)], "Missing option '--since'"),
    ([*window(), "--resume-file", NOT_A_CHECKPOINT], "is not a replay checkpoint"),
    ([*window(), "--resume-file", "missing.json"], "does not exist"),
    ([*window(), "--resume-file", NOT_A_CHECKPOINT, "--checkpoint", "x.json"],
     "exclude each other"),
])
def test_cli_bad_input_exits_2_before_any_client_is_built(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / NOT_A_CHECKPOINT).write_text('{"hello": 1}')
    result = invoke(args, monkeypatch=monkeypatch)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


# -- on the emulators ---------------------------------------------------------------------

def _emulator_stack(bq: Any, ps: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A log table and journal in a fresh dataset, a topic and its subscription,
    and the environment the command reads."""
    from google.cloud import pubsub_v1

    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.bigquery_tables import ensure_tables
    from outbox.pubsub_admin import ensure_topics
    from outbox.schema import OUTBOX_JOURNAL
    from outbox.wiring import Settings, Wiring

    host = bq.rest_url.removeprefix("http://")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", host)
    monkeypatch.setenv("BIGQUERY_EMULATOR_GRPC_HOST", bq.grpc_endpoint)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", ps.host)
    settings = Settings(project=bq.project, bigquery_emulator=host,
                        bigquery_emulator_grpc=bq.grpc_endpoint, pubsub_emulator=ps.host)
    wiring = Wiring.build(settings)
    dataset = f"replay_{uuid.uuid4().hex[:8]}"
    log, journal = ROUTE.table.with_location(dataset), OUTBOX_JOURNAL.with_location(dataset)
    ensure_tables(wiring.bigquery, bq.project, [log, journal])
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log, "scrapers", journal,
                                columns=ROUTE.columns)
    route = Route("scrapers", log, f"replay-{dataset}", ROUTE.encoder, ROUTE.columns)
    ensure_topics(bq.project, [route.topic])
    sub_client = pubsub_v1.SubscriberClient()
    sub = sub_client.subscription_path(bq.project, f"{route.topic}-sub")
    sub_client.create_subscription(name=sub, topic=f"projects/{bq.project}/topics/{route.topic}")
    return {"client": wiring.bigquery, "store": store, "route": route, "journal": journal,
            "sub_client": sub_client, "sub": sub, "obj": {"project": bq.project,
                                                          "routes": (route,)}}


def _table_state(stack: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    from google.cloud import bigquery

    client, log, journal = stack["client"], stack["route"].table, stack["journal"]
    since = [bigquery.ScalarQueryParameter("since", "TIMESTAMP", at(TODAY - dt.timedelta(30)))]
    config = bigquery.QueryJobConfig(query_parameters=since)
    flags = client.query(
        f"SELECT execution_id, published, published_at FROM `{client.project}.{log.dataset}."
        f"{log.name}` WHERE triggered_at >= @since ORDER BY execution_id", job_config=config)
    entries = client.query(
        f"SELECT route, outcome, execution_ids, recorded_at FROM `{client.project}."
        f"{journal.dataset}.{journal.name}` WHERE triggered_at >= @since ORDER BY recorded_at",
        job_config=config)
    return [tuple(r.values()) for r in flags.result()], [tuple(r.values())
                                                           for r in entries.result()]


def _pull(stack: dict[str, Any], expected: int) -> list[Any]:
    client, sub = stack["sub_client"], stack["sub"]
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        resp = client.pull(subscription=sub, max_messages=1000, timeout=5)
        got += [m.message for m in resp.received_messages]
        if resp.received_messages:
            client.acknowledge(subscription=sub,
                               ack_ids=[m.ack_id for m in resp.received_messages])
    extra = client.pull(subscription=sub, max_messages=1000, return_immediately=True)
    return got + [m.message for m in extra.received_messages]


@pytest.mark.emulator
def test_replay_on_the_emulators(bq_emulator: Any, pubsub_emulator: Any,
                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = _emulator_stack(bq_emulator, pubsub_emulator, monkeypatch)
    store = stack["store"]
    inside = [*rows(5, D1, scraper_name="bdl_games_scraper", status="success"),
              *rows(4, D2, seed=2)]
    store.append([*inside, *rows(2, TODAY - dt.timedelta(days=10), seed=3),
                  *rows(2, TODAY, seed=4)])
    store.record([JournalEntry(r["execution_id"], r["triggered_at"], "published", "run-1")
                  for r in inside[:3]])  # the relay published three of them
    assert store.fold(at(D1, 0)) == 3
    before = _table_state(stack)

    dry = invoke([*window(), "--dry-run"], obj=stack["obj"])
    assert dry.exit_code == 0, dry.output
    assert "rows to send              │ 9 " in dry.output, dry.output
    assert "estimated bytes (dry run) │" in dry.output
    print(dry.output)
    filtered = invoke([*window(), "--dry-run", "--scraper", "bdl_games_scraper", "--status",
                       "success"], obj=stack["obj"])
    wanted = sum(r["scraper_name"] == "bdl_games_scraper" and r["status"] == "success"
                 for r in inside)
    assert f"rows to send              │ {wanted} " in filtered.output, filtered.output

    path = tmp_path / "cp.json"
    result = invoke([*window(), "--checkpoint", str(path), "--batch-size", "4"],
                    obj=stack["obj"])
    assert result.exit_code == 0, result.output
    print(result.output)
    replay_id = json.loads(path.read_text())["replay_id"]
    messages = _pull(stack, 9)
    assert sorted(m.attributes["execution_id"] for m in messages) == sorted(
        r["execution_id"] for r in inside)
    by_id = {r["execution_id"]: r for r in inside}
    for m in messages:
        assert m.attributes["replay"] == "true" and m.attributes["replay_id"] == replay_id
        assert "force" not in m.attributes
        original = ROUTE.encoder(by_id[m.attributes["execution_id"]])
        assert json.loads(m.data) == json.loads(original.data)
    assert _table_state(stack) == before, "the published flags and the journal are unchanged"


@pytest.mark.emulator
def test_bigquery_source_pages_by_day_and_resumes_after_a_cursor(
        bq_emulator: Any, pubsub_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.replay_bigquery import BigQueryReplaySource

    stack = _emulator_stack(bq_emulator, pubsub_emulator, monkeypatch)
    written = [*rows(5, D1), *rows(3, D2, seed=2), *rows(1, TODAY, seed=3)]
    stack["store"].append(written)
    source = BigQueryReplaySource(stack["client"], stack["route"], page_size=2)
    expected = [r["execution_id"] for r in written[:8]]
    assert [p.execution_id for p in source.rows(query())] == expected
    assert source.jobs == 5, "per day: pages of 2 until a short page"
    read = list(source.rows(query()))
    assert read[0].row["triggered_at"] == written[0]["triggered_at"]
    tail = [p.execution_id for p in source.rows(query(), read[5].cursor)]
    assert tail == expected[6:] and source.count(query(), read[5].cursor) == 2


@pytest.mark.emulator
def test_an_interrupted_replay_resumes_on_the_emulators(
        bq_emulator: Any, pubsub_emulator: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    stack = _emulator_stack(bq_emulator, pubsub_emulator, monkeypatch)
    written = [*rows(6, D1), *rows(5, D2, seed=2)]
    stack["store"].append(written)
    real_connect = cli_replay._connect

    def aborting(settings: Any, route: Route) -> Any:  # Ctrl-C twice while batch 2 is out
        source, make = real_connect(settings, route)
        return source, lambda: Recording(make(), crash_on=2, exc=KeyboardInterrupt)

    path, args = tmp_path / "cp.json", [*window(), "--batch-size", "3"]
    first = invoke([*args, "--checkpoint", str(path)], aborting, monkeypatch, stack["obj"])
    assert first.exit_code == 130, first.output
    assert json.loads(path.read_text())["sent"] == 3
    monkeypatch.setattr(cli_replay, "_connect", real_connect)
    second = invoke([*args, "--resume-file", str(path)], obj=stack["obj"])
    assert second.exit_code == 0, second.output
    assert "skipped (already sent) │ 3 " in second.output, second.output
    counts: dict[str, int] = {}
    for m in _pull(stack, 14):
        counts[m.attributes["execution_id"]] = counts.get(m.attributes["execution_id"], 0) + 1
    ids = [r["execution_id"] for r in written]
    assert counts == {i: 2 if i in ids[3:6] else 1 for i in ids}, "only batch 2 twice"

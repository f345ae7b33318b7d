"""Dead-letter handling (issue 6, part 2): ``outbox dlq list`` and ``outbox dlq redrive``.

The story test runs the whole path on Google's Pub/Sub emulator: a processor
with a bug answers 500 five times, the emulator dead-letters the message, the
list shows it, the fix, the redrive, processed once. The other emulator tests
publish ready-made dead letters (with the attributes the emulator sets) straight
to a DLQ topic, which is faster and lets them shape the DLQ's contents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result
from google.cloud import pubsub_v1
from rich.console import Console
from werkzeug.serving import make_server

from outbox import cli_dlq
from outbox.blobs import InMemoryBlobs
from outbox.cli_dlq import dlq
from outbox.dlq import (
    DELIVERY_COUNT,
    SOURCE_PROJECT,
    SOURCE_PUBLISH_TIME,
    SOURCE_SUBSCRIPTION,
    DeadLetter,
    DlqInputError,
    PubSubDeadLetters,
    Redriver,
    parse_filters,
    peek,
    redrive_message,
)
from outbox.errors import TransientError
from outbox.ports import Message, PublishOutcome
from outbox.pubsub_publisher import PubSubPublisher
from outbox.routes import PHASE2_COMPLETE
from outbox.testing import InMemoryOutboxStore, InMemoryPublisher, PublisherFaults, SimulatedCrash
from processors.registry import Registry, Rule
from processors.service import create_app
from processors.testing import FakeProcessor, InMemoryLedger, InMemoryQuarantine, v1_payload

P = "test-project"
OBJ = {"project": P}


def wait_for(what: str, done: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def invoke(args: Sequence[str]) -> Result:
    return CliRunner().invoke(dlq, list(args), obj=OBJ)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner is no terminal, so rich would lay tables out in 80 columns."""
    monkeypatch.setattr(cli_dlq, "console", Console(width=150))


def field(output: str, name: str) -> str:
    """A value of the redrive summary table."""
    match = re.search(rf"{re.escape(name)}\s*│ (\S+)", output)
    assert match, f"{name!r} not in:\n{output}"
    return match.group(1)


# -- without an emulator -------------------------------------------------------------------


def letter(mid: str, execution_id: str = "e1", **attributes: str) -> DeadLetter:
    attrs = {"execution_id": execution_id, "scraper_name": "bdl_games_scraper",
             "status": "success", DELIVERY_COUNT: "5", SOURCE_SUBSCRIPTION: "nba-processors-sub",
             SOURCE_PROJECT: P, SOURCE_PUBLISH_TIME: "2026-11-28T10:00:00.000Z", **attributes}
    return DeadLetter(f"ack-{mid}", mid, None, b'{"execution_id": "%s"}' % execution_id.encode(),
                      attrs)


def test_filters_parse_or_within_a_key_and_refuse_malformed_items() -> None:
    assert parse_filters(["status=failed", "status=success", "scraper_name=a=b"]) == {
        "status": frozenset({"failed", "success"}), "scraper_name": frozenset({"a=b"})}
    for bad in ("status", "=x", "status=", "a b=c"):
        with pytest.raises(DlqInputError, match="KEY=VALUE"):
            parse_filters([bad])
    f = parse_filters(["status=failed", "scraper_name=x", "scraper_name=y"])
    assert letter("1", status="failed", scraper_name="y").matches(f)
    assert not letter("1", status="success", scraper_name="y").matches(f)
    assert letter("42").matches(parse_filters(["message_id=42"]))


def test_a_redriven_message_keeps_body_and_original_attributes_and_is_marked() -> None:
    d = letter("7", "abc")
    assert (d.delivery_count, d.source_subscription, d.source_project) == (
        5, "nba-processors-sub", P)
    m = redrive_message(d, "r1")
    assert m.key == "abc" and m.data == d.data
    assert m.attributes == {"execution_id": "abc", "scraper_name": "bdl_games_scraper",
                            "status": "success", "redrive": "true", "redrive_id": "r1"}


class FakeDlq:
    """A pull subscription in memory: pulled messages are leased until acked or released."""

    def __init__(self, letters: Sequence[DeadLetter]) -> None:
        self.available = {d.message_id: d for d in letters}
        self.leased: dict[str, DeadLetter] = {}
        self.acked: list[str] = []

    def pull(self, max_messages: int) -> list[DeadLetter]:
        out = list(self.available.values())[:max_messages]
        for d in out:
            self.leased[d.ack_id] = self.available.pop(d.message_id)
        return out

    def ack(self, ack_ids: Sequence[str]) -> None:
        for a in ack_ids:
            self.acked.append(self.leased.pop(a).message_id)

    def lease(self, ack_ids: Sequence[str], seconds: int) -> None:
        if seconds == 0:
            for a in ack_ids:
                d = self.leased.pop(a)
                self.available[d.message_id] = d


def test_only_confirmed_publishes_are_acked_and_everything_else_is_released() -> None:
    letters = [letter(str(i), f"e{i}") for i in range(1, 6)]
    letters.append(letter("6", "e6", scraper_name="other"))
    source = FakeDlq(letters)
    pub = InMemoryPublisher(["t"], PublisherFaults(reject_keys={"e2"}))
    s = Redriver(source, pub, "t", filters=parse_filters(["scraper_name=bdl_games_scraper"]),
                 batch_size=2).run()
    assert sorted(source.acked) == ["1", "3", "4", "5"] and s.redriven == 4
    assert [d.message_id for d, _ in s.failed] == ["2"] and s.not_matching == 1
    assert sorted(source.available) == ["2", "6"] and not source.leased


def test_a_crash_in_publish_releases_the_batch_and_acks_nothing_of_it() -> None:
    source = FakeDlq([letter(str(i), f"e{i}") for i in range(1, 6)])

    class Crashing(InMemoryPublisher):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
            if self.sent:
                raise SimulatedCrash("in publish")
            return super().publish(topic, messages)

    redriver = Redriver(source, Crashing(["t"]), "t", batch_size=2)
    with pytest.raises(SimulatedCrash):
        redriver.run()
    assert source.acked == ["1", "2"] and sorted(source.available) == ["3", "4", "5"]
    assert not source.leased


def test_a_message_of_another_topic_and_one_this_run_sent_are_left_alone() -> None:
    mine = letter("2", "e2", redrive_id="r-now")
    source = FakeDlq([letter("1", "e1", **{SOURCE_SUBSCRIPTION: "elsewhere"}), mine])
    s = Redriver(source, InMemoryPublisher(["t"]), "t", redrive_id="r-now",
                 topic_of=lambda d: "other" if d.source_subscription == "elsewhere" else "t"
                 ).run()
    assert (s.redriven, s.other_topic, s.came_back, source.acked) == (0, 1, 1, [])


# -- on the Pub/Sub emulator ---------------------------------------------------------------


@dataclass
class Names:
    topic: str
    dlq_topic: str
    dlq_sub: str
    tap: str
    """A pull subscription on ``topic``: what a redrive published."""


@pytest.fixture
def ps(pubsub_emulator: Any) -> Iterator[tuple[Names, Any, Any]]:
    """Unique topic, DLQ topic, DLQ subscription and tap; the clients."""
    tag = uuid.uuid4().hex[:8]
    n = Names(f"t-{tag}", f"t-{tag}-dlq", f"t-{tag}-dlq-sub", f"t-{tag}-tap")
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for t in (n.topic, n.dlq_topic):
        pub.create_topic(name=pub.topic_path(P, t))
    sub.create_subscription(name=sub.subscription_path(P, n.dlq_sub),
                            topic=pub.topic_path(P, n.dlq_topic))
    sub.create_subscription(name=sub.subscription_path(P, n.tap),
                            topic=pub.topic_path(P, n.topic))
    yield n, pub, sub
    sub.close()


def dead_letter(pub: Any, n: Names, execution_id: str, **attrs: str) -> str:
    """Publish what the emulator publishes when it dead-letters a message."""
    attributes = {"execution_id": execution_id, "scraper_name": "bdl_games_scraper",
                  "status": "success", DELIVERY_COUNT: "5", SOURCE_SUBSCRIPTION: "push-sub",
                  SOURCE_PROJECT: P, SOURCE_PUBLISH_TIME: "2026-11-28T10:00:00.000Z", **attrs}
    body = json.dumps(v1_payload(execution_id, f"mem://x/{execution_id}.json")).encode()
    return str(pub.publish(pub.topic_path(P, n.dlq_topic), body, **attributes).result())


def drain(sub: Any, name: str, settle: float = 1.0) -> list[DeadLetter]:
    """Pull and ack everything from ``name`` until a pull of ``settle`` s brings nothing."""
    source, out = PubSubDeadLetters(P, name, sub, wait=settle), []
    while got := source.pull(100):
        source.ack([d.ack_id for d in got])
        out += got
    return out


def in_dlq(sub: Any, n: Names) -> list[str]:
    return sorted(d.attributes["execution_id"]
                  for d in peek(PubSubDeadLetters(P, n.dlq_sub, sub, wait=1.0), 1000))


@pytest.mark.emulator
def test_a_processor_bug_dead_letters_then_list_fix_redrive_processed_once(
        ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    games = FakeProcessor("games", error=RuntimeError("bug: KeyError 'home_team'"))
    ledger, blobs = InMemoryLedger(), InMemoryBlobs()
    uri = blobs.write("ball-dont-lie/games/2026-11-28/20261128_100000.json", b"{}")
    app = create_app({"games": games}, Registry([Rule("ball-dont-lie/games", "games")]), ledger,
                     blobs, InMemoryOutboxStore(PHASE2_COMPLETE.table, "processors"),
                     InMemoryQuarantine())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        push_sub = f"{n.topic}-push"
        sub.create_subscription(request={
            "name": sub.subscription_path(P, push_sub), "topic": pub.topic_path(P, n.topic),
            "ack_deadline_seconds": 10,
            "push_config": {"push_endpoint": f"http://127.0.0.1:{server.server_port}/process"},
            "dead_letter_policy": {"dead_letter_topic": pub.topic_path(P, n.dlq_topic),
                                   "max_delivery_attempts": 5},
            "retry_policy": {"minimum_backoff": {"seconds": 1},
                             "maximum_backoff": {"seconds": 1}}})
        body = json.dumps(v1_payload("a1b2c3d4", uri)).encode()
        t0 = time.monotonic()
        original = pub.publish(pub.topic_path(P, n.topic), body, execution_id="a1b2c3d4",
                               scraper_name="bdl_games_scraper", status="success",
                               workflow="MANUAL").result()
        wait_for("five failed pushes", lambda: len(games.calls) >= 5)
        wait_for("the dead letter", lambda: in_dlq(sub, n) == ["a1b2c3d4"])
        print(f"dead-lettered {time.monotonic() - t0:.1f}s after publishing")
        assert len(games.calls) == 5 and ledger.rows == []

        shown = invoke(["list", "--subscription", n.dlq_sub])
        assert shown.exit_code == 0, shown.output
        print(shown.output)
        assert "a1b2c3d4" in shown.output and push_sub in shown.output
        (listed,) = json.loads(invoke(["list", "--subscription", n.dlq_sub, "--json"]).output)
        assert listed["message_id"] != original
        assert {k: listed[k] for k in ("execution_id", "scraper_name", "status",
                                       "delivery_count", "source_subscription",
                                       "source_project")} == {
            "execution_id": "a1b2c3d4", "scraper_name": "bdl_games_scraper",
            "status": "success", "delivery_count": 5, "source_subscription": push_sub,
            "source_project": P}
        assert listed["attributes"] == {"execution_id": "a1b2c3d4", "status": "success",
                                        "scraper_name": "bdl_games_scraper",
                                        "workflow": "MANUAL"}
        assert in_dlq(sub, n) == ["a1b2c3d4"], "list consumed nothing"

        games.error = None  # the fix is deployed
        result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic])
        assert result.exit_code == 0, result.output
        print(result.output)
        assert field(result.output, "redriven (published, acked)") == "1"
        wait_for("the redriven event to be processed", lambda: len(ledger.rows) == 1)
        time.sleep(2)  # room for a stray redelivery, which must not come
        assert ledger.keys() == [("a1b2c3d4", "games")] and len(games.calls) == 6
        event, _ = games.calls[-1]
        assert event.attributes["redrive"] == "true" and "redrive_id" in event.attributes
        assert not any(k.startswith("CloudPubSub") for k in event.attributes)
        assert in_dlq(sub, n) == []
    finally:
        server.shutdown()


@pytest.mark.emulator
def test_list_shows_attributes_and_consumes_nothing(ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    ids = [dead_letter(pub, n, f"e{i}") for i in range(3)]
    first = invoke(["list", "--subscription", n.dlq_sub, "--limit", "2", "--json"])
    assert first.exit_code == 0, first.output
    assert len(json.loads(first.output)) == 2
    again = json.loads(invoke(["list", "--subscription", n.dlq_sub, "--json"]).output)
    assert sorted(m["message_id"] for m in again) == sorted(ids)
    assert {m["delivery_count"] for m in again} == {5}
    table = invoke(["list", "--subscription", n.dlq_sub])
    assert "3 dead-lettered message(s)" in table.output and "push-sub" in table.output
    assert in_dlq(sub, n) == ["e0", "e1", "e2"]


@pytest.mark.emulator
def test_a_filter_leaves_non_matching_messages_in_the_dlq(ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    for i in range(3):
        dead_letter(pub, n, f"g{i}")
    dead_letter(pub, n, "o1", scraper_name="oddsa_player_props")
    dead_letter(pub, n, "f1", status="failed")
    result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic, "--filter",
                     "scraper_name=bdl_games_scraper", "--filter", "status=success"])
    assert result.exit_code == 0, result.output
    assert field(result.output, "not matching (left)") == "2"
    sent = drain(sub, n.tap)
    assert sorted(d.attributes["execution_id"] for d in sent) == ["g0", "g1", "g2"]
    assert in_dlq(sub, n) == ["f1", "o1"]


@pytest.mark.emulator
def test_dry_run_changes_nothing(ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    for i in range(3):
        dead_letter(pub, n, f"d{i}")
    result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would redrive" in result.output and "dry run: nothing sent" in result.output
    assert drain(sub, n.tap) == [] and in_dlq(sub, n) == ["d0", "d1", "d2"]


class Interrupting(PubSubPublisher):
    """A real publisher that is interrupted (Ctrl-C twice) on its ``on``-th publish call."""

    def __init__(self, on: int, exc: type[BaseException], after_send: bool = False) -> None:
        super().__init__(P)
        self.calls, self.on, self.exc, self.after_send = 0, on, exc, after_send

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        self.calls += 1
        if self.calls == self.on and not self.after_send:
            raise self.exc("interrupted before sending")
        out = super().publish(topic, messages)
        if self.calls == self.on:
            raise self.exc("interrupted after sending, before the ack")
        return out


@pytest.mark.emulator
def test_an_interrupted_redrive_acks_nothing_half_way_and_a_second_run_finishes(
        ps: tuple[Names, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    n, pub, sub = ps
    for i in range(5):
        dead_letter(pub, n, f"k{i}")
    monkeypatch.setattr(cli_dlq, "_publisher", lambda project: Interrupting(2, KeyboardInterrupt))
    args = ["redrive", "--subscription", n.dlq_sub, "--topic", n.topic, "--batch-size", "2"]
    first = invoke(args)
    assert first.exit_code == 130, first.output
    first_sent = sorted(d.attributes["execution_id"] for d in drain(sub, n.tap))
    assert len(first_sent) == 2
    assert sorted(in_dlq(sub, n) + first_sent) == [f"k{i}" for i in range(5)], \
        "each message is either re-published and acked, or still in the DLQ"
    monkeypatch.setattr(cli_dlq, "_publisher", lambda project: PubSubPublisher(project))
    second = invoke(args)
    assert second.exit_code == 0, second.output
    second_sent = sorted(d.attributes["execution_id"] for d in drain(sub, n.tap))
    assert sorted(first_sent + second_sent) == [f"k{i}" for i in range(5)], "each exactly once"
    assert in_dlq(sub, n) == []


@pytest.mark.emulator
def test_a_first_ctrl_c_finishes_the_batch_in_flight_then_stops(
        ps: tuple[Names, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    n, pub, sub = ps
    for i in range(5):
        dead_letter(pub, n, f"s{i}")

    class CtrlC(PubSubPublisher):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
            os.kill(os.getpid(), signal.SIGINT)  # during the first batch
            return super().publish(topic, messages)

    monkeypatch.setattr(cli_dlq, "_publisher", lambda project: CtrlC(project))
    result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic,
                     "--batch-size", "2"])
    assert result.exit_code == 130, result.output
    assert "stopping after the batch in flight" in result.output and "(stopped)" in result.output
    assert field(result.output, "redriven (published, acked)") == "2"
    assert len(drain(sub, n.tap)) == 2 and len(in_dlq(sub, n)) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.emulator
def test_a_crash_between_publish_and_ack_leaves_the_dlq_message_for_the_next_run(
        ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    for i in range(4):
        dead_letter(pub, n, f"c{i}")
    source = PubSubDeadLetters(P, n.dlq_sub, sub, wait=1.0)
    crashing = Interrupting(2, SimulatedCrash, after_send=True)
    with pytest.raises(SimulatedCrash):
        Redriver(source, crashing, n.topic, batch_size=2).run()
    crashing.close()
    assert len(in_dlq(sub, n)) == 2, "the crashed batch was published but not acked"
    publisher = PubSubPublisher(P)
    s = Redriver(source, publisher, n.topic, batch_size=2).run()
    publisher.close()
    assert s.redriven == 2 and in_dlq(sub, n) == []
    sent = [d.attributes["execution_id"] for d in drain(sub, n.tap)]
    assert len(sent) == 6 and sorted(set(sent)) == [f"c{i}" for i in range(4)], \
        "at least once: the crashed batch twice (consumers dedupe), nothing lost"


@pytest.mark.emulator
def test_failed_republishes_stay_in_the_dlq_and_exit_1(
        ps: tuple[Names, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    n, pub, sub = ps
    dead_letter(pub, n, "ok1")
    dead_letter(pub, n, "bad1")

    class Flaky(PubSubPublisher):
        def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
            good = [m for m in messages if m.key != "bad1"]
            sent = iter(super().publish(topic, good))
            return [next(sent) if m.key != "bad1" else
                    PublishOutcome(m.key, error=TransientError("unavailable")) for m in messages]

    monkeypatch.setattr(cli_dlq, "_publisher", lambda project: Flaky(project))
    result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic])
    assert result.exit_code == 1, result.output
    assert "left in the DLQ" in result.output and "unavailable" in result.output
    assert in_dlq(sub, n) == ["bad1"]
    assert [d.attributes["execution_id"] for d in drain(sub, n.tap)] == ["ok1"]


@pytest.mark.emulator
def test_messages_from_a_subscription_of_another_topic_stay(ps: tuple[Names, Any, Any]) -> None:
    n, pub, sub = ps
    other = f"{n.topic}-other"
    pub.create_topic(name=pub.topic_path(P, other))
    sub.create_subscription(name=sub.subscription_path(P, f"{other}-sub"),
                            topic=pub.topic_path(P, other))
    dead_letter(pub, n, "mine")
    dead_letter(pub, n, "theirs", **{SOURCE_SUBSCRIPTION: f"{other}-sub"})
    result = invoke(["redrive", "--subscription", n.dlq_sub, "--topic", n.topic])
    assert result.exit_code == 0, result.output
    assert field(result.output, "other topic (left)") == "1"
    assert in_dlq(sub, n) == ["theirs"]


@pytest.mark.emulator
@pytest.mark.parametrize("args, message", [
    (["list", "--subscription", "no-such-sub"], "subscription 'no-such-sub' does not exist"),
    (["redrive", "--subscription", "no-such-sub"], "subscription 'no-such-sub' does not exist"),
    (["redrive", "--subscription", "{dlq_sub}", "--topic", "no-such-topic"],
     "topic 'no-such-topic' does not exist"),
    (["redrive", "--subscription", "{push}"], "is a push subscription"),
])
def test_unknown_names_exit_2_before_anything_is_pulled(
        ps: tuple[Names, Any, Any], args: list[str], message: str) -> None:
    n, pub, sub = ps
    push = f"{n.topic}-p"
    sub.create_subscription(request={"name": sub.subscription_path(P, push),
                                     "topic": pub.topic_path(P, n.topic),
                                     "push_config": {"push_endpoint": "http://127.0.0.1:9/x"}})
    dead_letter(pub, n, "z1")
    result = invoke([a.format(dlq_sub=n.dlq_sub, push=push) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert in_dlq(sub, n) == ["z1"]


@pytest.mark.parametrize("args, message", [
    (["list", "--limit", "0"], "--limit"),
    (["redrive", "--limit", "-3"], "--limit"),
    (["redrive", "--filter", "status"], "KEY=VALUE"),
    (["redrive", "--filter", "=x"], "KEY=VALUE"),
    (["redrive", "--batch-size", "0"], "--batch-size"),
])
def test_bad_options_exit_2_before_any_client_is_built(
        args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("no client may be built for a bad request")

    monkeypatch.setattr(cli_dlq, "PubSubAdmin", refuse)
    monkeypatch.setattr(cli_dlq, "PubSubDeadLetters", refuse)
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert message in result.output

"""oddsa_player_points_props: The Odds API player points lines, one row per outcome."""

from __future__ import annotations

import datetime as dt

import pytest

from processors.base import InvalidFile
from processors.raw.oddsa_player_points_props import OddsaPlayerPointsPropsProcessor
from processors.raw.tables import ODDS_API_PLAYER_POINTS_PROPS as ODDS
from processors.raw.testing import InMemoryRawSink
from processors_raw.samples import changed, encode, event, odds_event, odds_file

NOON = "odds-api/player-props/2026-11-28/20261128_170000.json"
EVENING = "odds-api/player-props/2026-11-28/20261128_230000.json"
OUTCOME = "0.bookmakers.0.markets.0.outcomes.0"


@pytest.fixture
def processor(sink: InMemoryRawSink) -> OddsaPlayerPointsPropsProcessor:
    return OddsaPlayerPointsPropsProcessor(sink)


def lines(sink: InMemoryRawSink) -> list[tuple[object, ...]]:
    return sorted((r["last_update"], r["bookmaker"], r["player_name"], r["side"], r["price"])
                  for r in sink.rows(ODDS))


def test_every_outcome_becomes_a_typed_row(processor: OddsaPlayerPointsPropsProcessor,
                                           sink: InMemoryRawSink) -> None:
    result = processor.process(event(NOON), encode(odds_file()))
    # 2 bookmakers x 2 players x Over/Under; tip-off 00:10Z is 7:10 pm on the 28th in New York.
    assert (result.status, result.record_count, result.game_date) == (
        "success", 8, dt.date(2026, 11, 28))
    over = next(r for r in sink.rows(ODDS) if r["bookmaker"] == "draftkings"
                and r["player_name"] == "LeBron James" and r["side"] == "Over")
    assert over["price"] == -115 and isinstance(over["price"], int)
    assert over["point"] == 25.5 and isinstance(over["point"], float)
    assert over["commence_time"] == dt.datetime(2026, 11, 29, 0, 10, tzinfo=dt.UTC)
    assert over["game_date"] == dt.date(2026, 11, 28)
    assert over["last_update"] == dt.datetime(2026, 11, 28, 18, 3, 11, tzinfo=dt.UTC)
    assert (over["event_id"], over["bookmaker_title"]) == (
        "e912304de2b2ce35b473ce2ecd3d1502", "DraftKings")
    assert (over["home_team"], over["away_team"]) == ("Los Angeles Lakers", "Boston Celtics")


def test_the_same_file_twice_leaves_the_same_rows(processor: OddsaPlayerPointsPropsProcessor,
                                                  sink: InMemoryRawSink) -> None:
    processor.process(event(NOON), encode(odds_file()))
    first = lines(sink)
    processor.process(event(NOON), encode(odds_file()))
    assert lines(sink) == first and len(first) == 8


def test_a_later_snapshot_is_kept_beside_the_first(processor: OddsaPlayerPointsPropsProcessor,
                                                   sink: InMemoryRawSink) -> None:
    processor.process(event(NOON), encode(odds_file()))
    moved = odds_event(update="2026-11-28T22:41:00Z", lebron=(26.5, -110, -110))
    processor.process(event(EVENING), encode(odds_file(moved)))
    rows = sink.rows(ODDS)
    assert len(rows) == 16
    lebron_over = sorted((r["last_update"].hour, r["point"]) for r in rows
                         if r["player_name"] == "LeBron James" and r["side"] == "Over"
                         and r["bookmaker"] == "fanduel")
    assert lebron_over == [(18, 25.5), (22, 26.5)]


def test_an_unchanged_snapshot_scraped_again_adds_nothing(
    processor: OddsaPlayerPointsPropsProcessor, sink: InMemoryRawSink
) -> None:
    processor.process(event(NOON), encode(odds_file()))
    processor.process(event(EVENING), encode(odds_file()))
    assert len(sink.rows(ODDS)) == 8  # same last_update: same snapshot


def test_a_bookmaker_without_a_market_stamp_uses_its_own(
    processor: OddsaPlayerPointsPropsProcessor, sink: InMemoryRawSink
) -> None:
    doc = changed(odds_file(), "0.bookmakers.0.markets.0.last_update", ...)
    doc = changed(doc, "0.bookmakers.0.last_update", "2026-11-28T18:00:00Z")
    processor.process(event(NOON), encode(doc))
    stamps = {r["bookmaker"]: r["last_update"].minute for r in sink.rows(ODDS)}
    assert stamps == {"draftkings": 0, "fanduel": 3}


@pytest.mark.parametrize(("path", "value", "failed", "message"), [
    (f"{OUTCOME}.price", "abc", 1, "outcomes[0].price: expected an integer, got string 'abc'"),
    (f"{OUTCOME}.price", 1.87, 1, "outcomes[0].price: expected an integer"),
    (f"{OUTCOME}.name", "Push", 1, "outcomes[0].name: expected Over or Under"),
    (f"{OUTCOME}.description", ..., 1, "outcomes[0].description: is required"),
    (f"{OUTCOME}.point", None, 1, "outcomes[0].point: is null"),
    ("0.bookmakers.0.markets", {}, 1, "[0].bookmakers[0].markets: expected an array"),
    ("0.bookmakers.0.key", ..., 1, "[0].bookmakers[0].key: is required"),
])
def test_a_bad_outcome_or_bookmaker_is_skipped_and_the_rest_loaded(
    processor: OddsaPlayerPointsPropsProcessor, sink: InMemoryRawSink,
    caplog: pytest.LogCaptureFixture, path: str, value: object, failed: int, message: str,
) -> None:
    result = processor.process(event(NOON), encode(changed(odds_file(), path, value)))
    assert result.records_failed == failed and result.record_count == len(sink.rows(ODDS))
    assert result.record_count in (7, 4)  # one outcome lost, or one bookmaker's four
    assert message in caplog.text


def test_a_bad_event_costs_that_event_only(processor: OddsaPlayerPointsPropsProcessor,
                                           caplog: pytest.LogCaptureFixture) -> None:
    doc = odds_file(odds_event("e1", commence="tonight"), odds_event("e2"))
    result = processor.process(event(NOON), encode(doc))
    assert (result.record_count, result.records_failed) == (8, 1)
    assert "[0].commence_time: expected an ISO-8601 timestamp, got string 'tonight'" in caplog.text


def test_other_markets_are_ignored(processor: OddsaPlayerPointsPropsProcessor) -> None:
    doc = changed(odds_file(), "0.bookmakers.1.markets.0.key", "player_rebounds")
    result = processor.process(event(NOON), encode(doc))
    assert (result.record_count, result.records_failed) == (4, 0)


@pytest.mark.parametrize(("data", "message"), [
    (b'{"id": "e1"}', "<root>: expected an array, got object"),
    (b"[{]", "not a JSON document"),
    (b"", "not a JSON document"),
])
def test_a_malformed_file_is_refused_whole(processor: OddsaPlayerPointsPropsProcessor,
                                           sink: InMemoryRawSink, data: bytes,
                                           message: str) -> None:
    with pytest.raises(InvalidFile, match=message.replace("[", r"\[")):
        processor.process(event(NOON), data)
    assert sink.statements == 0


@pytest.mark.parametrize("doc", [[], [changed(odds_event(), "bookmakers", [])]],
                         ids=["no events", "no lines posted yet"])
def test_nothing_to_load_is_no_data(processor: OddsaPlayerPointsPropsProcessor,
                                    sink: InMemoryRawSink, doc: object) -> None:
    result = processor.process(event(NOON), encode(doc))
    assert (result.status, result.record_count, sink.statements) == ("no_data", 0, 0)


def test_a_file_spanning_two_game_days_reports_no_single_date(
    processor: OddsaPlayerPointsPropsProcessor,
) -> None:
    doc = odds_file(odds_event("e1"), odds_event("e2", commence="2026-11-30T00:10:00Z"))
    assert processor.process(event(NOON), encode(doc)).game_date is None

"""The Odds API player props scraper: events, then per-event odds; partial when some fail."""

from __future__ import annotations

import json
import re

from scraper_fixtures import DATE, ODDS_KEY, Rig

from scrapers.fixture_server import EVENTS_PATH, Reply, event_odds, odds_event, odds_path
from scrapers.odds_api import commence_window

NAME = "oddsa_player_props"
IDS = ["e912304de2b2ce35b473ce2ecd3d1502", "a1b2c3d4e5f60718293a4b5c6d7e8f90",
       "0f9e8d7c6b5a49382716f5e4d3c2b1a0"]


def _events(rig: Rig, ids: list[str]) -> None:
    rig.upstream.on(EVENTS_PATH, Reply(body=[odds_event(i, n, n + 1) for n, i in enumerate(ids)]))


def test_success_writes_an_array_of_per_event_odds(rig: Rig) -> None:
    _events(rig, IDS[:2])
    for event_id in IDS[:2]:
        rig.upstream.on(odds_path(event_id), Reply(body=event_odds(event_id)))

    assert rig.run(NAME, date=DATE).status == "success"

    row = rig.only_row()
    assert row["data_summary"]["record_count"] == 2
    stats = row["data_summary"]["scraper_stats"]
    assert stats["events"] == 2 and stats["events_with_odds"] == 2 and stats["bookmakers"] == 2
    assert re.fullmatch(rf"file://.*/odds-api/player-props/{DATE}/\d{{8}}_\d{{6}}\.json",
                        row["gcs_path"])
    assert rig.file_at(row) == [event_odds(i) for i in IDS[:2]]
    listing = rig.upstream.requests_to(EVENTS_PATH)[0].query
    assert listing == {"apiKey": ODDS_KEY, "commenceTimeFrom": "2026-11-28T06:00:00Z",
                       "commenceTimeTo": "2026-11-29T05:59:59Z"}
    odds = rig.upstream.requests_to(odds_path(IDS[0]))[0].query
    assert odds == {"apiKey": ODDS_KEY, "regions": "us", "markets": "player_points",
                    "oddsFormat": "american"}
    assert row["opts"] == {"date": DATE}
    assert ODDS_KEY not in json.dumps(row, default=str)
    assert ODDS_KEY.encode() not in rig.blobs.read(row["gcs_path"])


def test_a_day_without_events_is_no_data(rig: Rig) -> None:
    _events(rig, [])
    assert rig.run(NAME, date=DATE).status == "no_data"
    row = rig.only_row()
    assert row["data_summary"]["record_count"] == 0 and rig.file_at(row) == []


def test_a_refused_key_fails_the_run_without_leaking_the_key(rig: Rig) -> None:
    rig.upstream.on(EVENTS_PATH, Reply(401, {"message": "API key is not valid"}))
    assert rig.run(NAME, date=DATE).status == "failed"
    row = rig.only_row()
    assert row["error_type"] == "UpstreamHTTPError"
    assert "HTTP 401" in row["error_message"] and "apiKey=***" in row["error_message"]
    assert ODDS_KEY not in json.dumps(row, default=str)
    assert len(rig.upstream.requests_to(EVENTS_PATH)) == 1


def test_one_event_failing_of_three_is_partial(rig: Rig) -> None:
    _events(rig, IDS)
    rig.upstream.on(odds_path(IDS[0]), Reply(body=event_odds(IDS[0])))
    rig.upstream.on(odds_path(IDS[1]), Reply(500, {"message": "internal error"}))
    rig.upstream.on(odds_path(IDS[2]), Reply(body=event_odds(IDS[2])))

    assert rig.run(NAME, date=DATE).status == "partial"

    row = rig.only_row()
    assert row["data_summary"]["record_count"] == 2
    assert row["data_summary"]["scraper_stats"]["records_failed"] == 1
    assert row["error_type"] == "RecordsFailed"
    assert f"event {IDS[1]}" in row["error_message"] and "HTTP 500" in row["error_message"]
    assert ODDS_KEY not in row["error_message"]
    assert row["completed_at"] is not None and row["gcs_path"]
    assert rig.file_at(row) == [event_odds(IDS[0]), event_odds(IDS[2])]
    assert len(rig.upstream.requests_to(odds_path(IDS[1]))) == 4, "retried before giving up"


def test_a_malformed_odds_answer_counts_as_a_failed_record(rig: Rig) -> None:
    _events(rig, IDS[:2])
    rig.upstream.on(odds_path(IDS[0]), Reply(body=b"<html>oops</html>"))
    rig.upstream.on(odds_path(IDS[1]), Reply(body=event_odds(IDS[1])))
    assert rig.run(NAME, date=DATE).status == "partial"
    assert "MalformedJSON" in rig.only_row()["error_message"]


def test_every_event_failing_is_failed_not_partial(rig: Rig) -> None:
    _events(rig, IDS[:2])
    assert rig.run(NAME, date=DATE).status == "failed"  # no odds fixture: 404 for both
    row = rig.only_row()
    assert row["error_type"] == "AllRecordsFailed"
    assert "2 record(s) failed" in row["error_message"]
    assert row.get("gcs_path") is None


def test_the_events_list_must_be_an_array(rig: Rig) -> None:
    rig.upstream.on(EVENTS_PATH, Reply(body={"message": "unexpected"}))
    assert rig.run(NAME, date=DATE).status == "failed"
    assert rig.only_row()["error_type"] == "UnexpectedResponse"


def test_the_commence_window_is_the_us_day_of_the_date() -> None:
    assert commence_window("2026-03-08") == ("2026-03-08T06:00:00Z", "2026-03-09T05:59:59Z")
    assert commence_window("2026-12-31") == ("2026-12-31T06:00:00Z", "2027-01-01T05:59:59Z")

"""The lifecycle every scraper shares: one row, its metadata, secrets, log-write failures."""

from __future__ import annotations

import datetime as dt
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scraper_fixtures import DATE, Rig

from outbox.testing import StoreFaults
from scrapers.fixture_server import Reply, bdl_page, game
from scrapers.http import masked_url, retry_after_seconds
from scrapers.options import InvalidOptions, validate_options, without_secrets
from scrapers.registry import REGISTRY, Registry
from scrapers.run_log import LogWriteFailed, Outcome, RunMeta, build_row

GAMES = "/v1/games"
SCRAPERS_DIR = Path(__file__).resolve().parents[2] / "scrapers"


def test_every_run_gets_its_own_execution_id_which_is_also_the_run_id(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    for _ in range(20):
        rig.run("bdl_games_scraper", date=DATE)
    ids = [r["execution_id"] for r in rig.store.rows]
    assert len(set(ids)) == 20
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert all(r["run_id"] == r["execution_id"] for r in rig.store.rows)


def test_metadata_defaults_off_cloud_run_and_on_it(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    rig.run("bdl_games_scraper", date=DATE)
    rig.env.update(K_SERVICE="nba-scrapers")
    rig.run("bdl_games_scraper", date=DATE)
    rig.run("bdl_games_scraper", date=DATE, source="RECOVERY", workflow="post_game_collection",
            environment="staging", triggered_by="ops")
    local, cloud, chosen = rig.store.rows
    assert (local["source"], local["environment"], local["workflow"]) == ("LOCAL", "local",
                                                                          "MANUAL")
    assert local["triggered_by"] == "pytest" and local["recovery"] is False
    assert (cloud["source"], cloud["environment"]) == ("CLOUD_RUN", "prod")
    assert (chosen["source"], chosen["workflow"], chosen["environment"],
            chosen["triggered_by"], chosen["recovery"]) == (
        "RECOVERY", "post_game_collection", "staging", "ops", True)
    assert local["data_summary"]["scraper_class"] == "BdlGamesScraper"
    assert set(local["data_summary"]) == {"record_count", "scraper_stats", "is_empty_report",
                                          "scraper_class"}


def test_a_transient_log_write_failure_is_retried_and_the_row_lands_once(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    rig.store.faults = StoreFaults(fail_appends=2)
    assert rig.run("bdl_games_scraper", date=DATE).status == "success"
    assert len(rig.store.rows) == 1


def test_a_log_write_that_never_succeeds_is_raised_and_logged_with_id_and_path(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    rig.store.faults = StoreFaults(fail_appends=100)
    with caplog.at_level(logging.ERROR, "scrapers"), pytest.raises(LogWriteFailed) as caught:
        rig.run("bdl_games_scraper", date=DATE)
    failed = caught.value
    assert rig.store.rows == []
    assert failed.gcs_path and rig.blobs.read(failed.gcs_path), "the data was exported"
    assert failed.execution_id in str(failed) and failed.gcs_path in str(failed)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    fields = record.json_fields  # type: ignore[attr-defined]
    assert fields["execution_id"] == failed.execution_id
    assert fields["gcs_path"] == failed.gcs_path
    assert fields["row"]["status"] == "success", "the full row, so it can be re-appended"


def test_the_error_message_is_cut_to_1000_characters() -> None:
    now = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    meta = RunMeta("0123456789abcdef", "bdl_games_scraper", "BdlGamesScraper", now, "LOCAL",
                   "MANUAL", "local", None, {})
    row = build_row(meta, Outcome("failed", error_type="X", error_message="x" * 5000,
                                  completed_at=now))
    assert len(row["error_message"]) == 1000
    assert row["completed_at"] is None and row["duration_seconds"] is None


def test_secrets_are_removed_at_any_depth_whatever_their_case() -> None:
    opts = {"date": DATE, "api_key": "a", "apiKey": "b", "nested": {
        "Authorization": "c", "X-Api-Key": "d", "list": [{"password": "e", "keep": 1}],
        "access_token": "f", "client_secret": "g"}}
    assert without_secrets(opts) == {"date": DATE, "nested": {"list": [{"keep": 1}]}}


def test_option_validation_names_what_is_wrong() -> None:
    schema = REGISTRY.get("bdl_games_scraper").options
    with pytest.raises(InvalidOptions, match=r"unknown option.*data, sesaon"):
        validate_options(schema, {"data": DATE, "sesaon": "2026"})
    with pytest.raises(InvalidOptions, match="'date' is required"):
        validate_options(schema, {})
    for bad in ("2026-13-01", "28/11/2026", "2026-11-28T00:00", "20261128"):
        with pytest.raises(InvalidOptions, match="YYYY-MM-DD"):
            validate_options(schema, {"date": bad})
    with pytest.raises(InvalidOptions, match="must be a string"):
        validate_options(schema, {"date": 20261128})
    with pytest.raises(InvalidOptions, match="source"):
        validate_options(schema, {"date": DATE, "source": "SOMEONE"})
    with pytest.raises(InvalidOptions) as caught:
        validate_options(schema, {"date": DATE, "api_key": 5})
    assert "api_key" in str(caught.value)


def test_invalid_options_write_nothing(rig: Rig) -> None:
    with pytest.raises(InvalidOptions):
        rig.run("bdl_games_scraper", date="yesterday")
    assert rig.store.rows == [] and rig.upstream.seen == []


def test_the_registry_keeps_the_platforms_names() -> None:
    assert REGISTRY.names == ["bdl_games_scraper", "bdl_player_box_scores_scraper",
                              "oddsa_player_props"]
    described = {d["name"]: d for d in REGISTRY.describe()}
    assert described["oddsa_player_props"]["prefix"] == "odds-api/player-props"
    assert {"date", "api_key", "workflow"} <= {
        o["name"] for o in described["bdl_games_scraper"]["options"]}
    with pytest.raises(InvalidOptions, match="unknown scraper 'nope'"):
        REGISTRY.get("nope")
    cls = REGISTRY.get("bdl_games_scraper")
    with pytest.raises(ValueError, match="two scrapers"):
        Registry([cls, cls])


def test_urls_in_messages_hide_secret_parameters() -> None:
    url = "https://api.example/v4/x?apiKey=SECRET&regions=us&token=T&dates[]=2026-11-28"
    assert masked_url(url) == ("https://api.example/v4/x?apiKey=***&regions=us&token=***"
                               "&dates[]=2026-11-28")


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Sat, 28 Nov 2026 10:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sat, 28 Nov 2026 09:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def test_scrapers_never_import_a_pubsub_client() -> None:
    code = ("import sys, scrapers.registry, scrapers.service, scrapers.base; "
            "bad = sorted(m for m in sys.modules if m.startswith('google.cloud.pubsub')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for source in SCRAPERS_DIR.glob("*.py"):
        assert "pubsub" not in source.read_text().lower(), source.name

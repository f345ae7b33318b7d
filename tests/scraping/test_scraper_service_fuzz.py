"""Fuzzing ``POST /scrape`` with hypothesis: arbitrary bodies, query strings, content types
and Cloud Scheduler headers, near-valid requests with exactly one field wrong, and other
methods and paths (``/scraper/<name>`` included).

Why: a refused request must leave no trace (no log row, so no event; no data file; no
call upstream), and no input may cause a 5xx: a 500 here means a run whose row could
not be written, that is an event lost. The log store refuses what the Storage Write API
refuses (text that is not UTF-8), so a row that only the in-memory store would accept
shows up as the 500 it is in production.

One app per test serves every example, on the in-memory store and blobs and a scripted
upstream on 127.0.0.1. More examples with CI=true; the module then checks that at least
10,000 requests reached ``POST /scrape``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from scraper_fixtures import FAST_RETRIES

from outbox.blobs import InMemoryBlobs
from outbox.schema import SCRAPER_SOURCES
from outbox.testing import InMemoryOutboxStore
from processors.testing import check_writable
from scrapers.fixture_server import (
    EVENTS_PATH,
    Reply,
    Upstream,
    bdl_page,
    box_score,
    event_odds,
    game,
    odds_event,
    odds_path,
)
from scrapers.registry import REGISTRY
from scrapers.service import create_app

CI = os.environ.get("CI", "").strip().lower() == "true"
ENDPOINT = "/scrape"
NAMES = REGISTRY.names
LIMITS = {"workflow": 256, "triggered_by": 256, "group": 256, "environment": 64,
          "api_key": 256}
"""Longest accepted option values: 256 for any option, 64 where the log column is shorter."""


def fuzz(ci: int, local: int) -> settings:
    return settings(max_examples=ci if CI else local, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# -- the rig -----------------------------------------------------------------------------


class WritableStore(InMemoryOutboxStore):
    """The in-memory log store, refusing as the Storage Write API does text that is not
    UTF-8 (a lone surrogate from a JSON escape); the scraper then answers 500."""

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            check_writable(dict(row))
        super().append(rows)


class CountingBlobs(InMemoryBlobs):
    """Counts writes: two runs in one second share a path, so objects alone undercount."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str:
        self.writes += 1
        return super().write(path, data, content_type)


@dataclass(repr=False)  # hypothesis prints the fixtures of a failing example
class Rig:
    client: FlaskClient
    store: WritableStore
    blobs: CountingBlobs
    upstream: Upstream

    def effects(self) -> tuple[int, int, int]:
        """(log rows, blob writes, requests upstream)."""
        return len(self.store.rows), self.blobs.writes, len(self.upstream.seen)


@pytest.fixture
def rig() -> Iterator[Rig]:
    upstream = Upstream()
    upstream.on("/v1/games", Reply(body=bdl_page([game(1), game(2)])))
    upstream.on("/v1/stats", Reply(body=bdl_page([box_score(1)])))
    upstream.on(EVENTS_PATH, Reply(body=[odds_event("e1")]))
    upstream.on(odds_path("e1"), Reply(body=event_odds("e1")))
    env = {"BDL_BASE_URL": upstream.url, "ODDS_API_BASE_URL": upstream.url,
           "BDL_API_KEY": "bdl-env-key", "ODDS_API_KEY": "odds-env-key"}
    store, blobs = WritableStore(), CountingBlobs()
    app = create_app(REGISTRY, store, blobs, env=env, retry=FAST_RETRIES, sleep=lambda s: None)
    try:
        yield Rig(app.test_client(), store, blobs, upstream)
    finally:
        upstream.close()


pytestmark = pytest.mark.usefixtures("enough_requests")  # tests/conftest.py
REQUESTS: Counter[str] = Counter()
"""Requests sent to ``POST /scrape``, by test."""
COUNTED_TESTS = {"test_arbitrary_bodies_queries_and_headers", "test_near_valid_requests"}



def send(rig: Rig, test: str, method: str = "POST", path: str = ENDPOINT, *,
         query: str = "", body: bytes = b"", content_type: str | None = None,
         job: str | None = None) -> Any:
    """One request; checks what any request must satisfy, and returns the response."""
    before = rig.effects()
    # A stream, not data=: the test client would replace an empty multipart body with a form.
    resp = rig.client.open(path, method=method, query_string=query,
                           input_stream=io.BytesIO(body), content_length=len(body),
                           content_type=content_type,
                           headers={} if job is None else {"X-CloudScheduler-JobName": job})
    rows, writes, calls = (a - b for a, b in zip(rig.effects(), before, strict=True))
    if method == "POST" and path == ENDPOINT:
        REQUESTS[test] += 1
    if currently_in_test_context():
        event(f"{method} {resp.status_code}")
    assert resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:500])
    if method == "POST" and resp.status_code == 200:  # only a scrape route answers a POST 200
        assert rows == 1, f"a run wrote {rows} rows"
        row, summary = rig.store.rows[-1], resp.get_json()
        assert summary["execution_id"] == row["execution_id"]
        assert writes == (1 if row.get("gcs_path") else 0), (writes, row)
        assert "api_key" not in (row.get("opts") or {})
    else:
        assert (rows, writes, calls) == (0, 0, 0), (
            f"a refused request ({resp.status_code}) left {rows} rows, {writes} files, "
            f"{calls} calls upstream")
    return resp


# -- strategies --------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
OPTION_NAMES = ["scraper", "date", "api_key", "workflow", "source", "triggered_by",
                "environment", "group"]
keys = st.sampled_from([*OPTION_NAMES, "Date", "dayte", "apiKey", "scraper_name", ""]) | st.text(
    max_size=8)
values = (st.sampled_from([*NAMES, "2026-11-28", "2026-02-30", "28-11-2026", "MANUAL",
                           "manual", "", " ", "x" * 257, "e" * 65, "\x00"])
          | st.text(max_size=12))
queries = (st.lists(st.tuples(keys, values), max_size=4).map(urlencode)
           | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20))
CONTENT_TYPES = [None, "application/json", "application/octet-stream", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16", "*/*", "", "text/html"]
content_types = st.sampled_from(CONTENT_TYPES) | st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
jobs = st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=600)
SPECIAL_BODIES = [b'{"scraper": "bdl_games_scraper", "date": "2026-11-28", "workflow": "\\ud800"}',
                  b'{"scraper": "bdl_games_scraper", "date": 1' + b"0" * 400 + b"}",
                  b'{"scraper": "bdl_games_scraper", "date": NaN}', b"\xef\xbb\xbf{}", b"{}",
                  b"null", b'"bdl_games_scraper"', b"\x00", b"scraper=bdl_games_scraper"]


def _nested(key: str, depth: int) -> bytes:
    """``{key: [[[...]]]}``, well-formed, as deep as the JSON parser allows and deeper."""
    return b'{"%s": %s%s}' % (key.encode(), b"[" * depth, b"]" * depth)


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=80),
    st.sampled_from(SPECIAL_BODIES),
    st.integers(900, 60_000).flatmap(lambda n: st.sampled_from([b"[" * n, b'{"a":' * n])),
    st.builds(_nested, st.sampled_from(["scraper", "date", "workflow", "x"]),
              st.integers(1, 1100)),
    st.builds(lambda v, enc: json.dumps(v).encode(enc), json_values,
              st.sampled_from(["utf-8", "utf-16"])),
    st.dictionaries(keys, json_values | values, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(  # a scraper that may run, with anything in its options
        {"scraper": st.sampled_from(NAMES) | values, "date": st.just("2026-11-28") | values},
        optional=dict.fromkeys(OPTION_NAMES[2:], values | json_values),
    ).map(lambda d: json.dumps(d).encode()),
)


def _not_blank(text: str) -> str:
    return text if text.strip() else f"w{text}"


def _unknown(name: str) -> str:
    """``name``, changed if it names a scraper, an option or a source. (Named functions
    rather than lambdas in strategies: hypothesis parses a lambda's source to describe it.)"""
    return f"{name}?" if name.strip() in {*NAMES, *OPTION_NAMES, *SCRAPER_SOURCES} else name


def _text(limit: int) -> st.SearchStrategy[str]:
    """A valid option value: not blank, at most ``limit`` characters once stripped."""
    return st.text(min_size=1, max_size=24).map(_not_blank) | st.just("w" * limit)


VALID: dict[str, st.SearchStrategy[Any]] = {
    "date": st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)).map(str),
    "api_key": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                       max_size=40),
    "workflow": _text(256), "triggered_by": _text(256), "group": _text(256),
    "environment": _text(64), "source": st.sampled_from(sorted(SCRAPER_SOURCES)),
}


def _wrong(name: str) -> st.SearchStrategy[Any]:
    """Values the option ``name`` must refuse."""
    wrong_type = (st.integers() | st.floats() | st.booleans()
                  | st.lists(st.text(max_size=3), max_size=2)
                  | st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
    blank = st.sampled_from([""] if name == "api_key" else ["", " ", "\t\n"])
    surrogate = st.text(max_size=5).map(lambda s: s + "\ud800")
    if name == "date":
        return wrong_type | blank | surrogate | st.sampled_from(
            ["2026-02-30", "28-11-2026", "2026-11-28T00:00:00", "2026-1-1", "20261128",
             "\uff12\uff10\uff12\uff16-11-28", "0000-01-01", "today"])
    if name == "source":
        return wrong_type | blank | surrogate | st.text(max_size=10).map(_unknown)
    limit = LIMITS[name]
    too_long = st.integers(limit + 1, limit + 300).map(lambda n: "y" * n)
    return wrong_type | blank | surrogate | too_long


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes, str | None, str | None, str]:
    """A valid ``/scrape`` request with at most one field wrong:
    (query, body, content type, job header, what the 400 must name ("" when valid))."""
    params: dict[str, Any] = {"scraper": draw(st.sampled_from(NAMES)),
                              "date": draw(VALID["date"])}
    for name in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=3, unique=True)):
        params[name] = draw(VALID[name])
    wrong = draw(st.sampled_from(["", "scraper", "unknown option", *sorted(VALID)]))
    named = f"'{wrong}'" if wrong in VALID else wrong
    if wrong == "scraper":
        params["scraper"] = draw(st.text(max_size=20).map(_unknown)
                                 | st.integers() | st.lists(st.sampled_from(NAMES), max_size=1))
    elif wrong == "date" and draw(st.booleans()):
        del params["date"]
    elif wrong == "unknown option":
        params[draw(keys.map(_unknown))] = draw(values)
    elif wrong:
        params[wrong] = draw(_wrong(wrong))
    in_query = {k: isinstance(v, str) and "\ud800" not in v and draw(st.booleans())
                for k, v in params.items()}
    query = {k: v for k, v in params.items() if in_query[k]}
    body = {k: v for k, v in params.items() if not in_query[k]}
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=1)) if body else ():
        query[key] = draw(values)  # the body wins: this must change nothing
    send_body = bool(body) or draw(st.booleans())  # "{}" or nothing at all
    raw = json.dumps(body).encode() if send_body else b""
    return urlencode(query), raw, draw(content_types), draw(jobs), named


# -- the tests ---------------------------------------------------------------------------


@fuzz(ci=2400, local=80)
@given(requests=st.lists(st.tuples(queries, bodies, content_types, jobs), min_size=1,
                         max_size=5))
def test_arbitrary_bodies_queries_and_headers(
        rig: Rig, requests: list[tuple[str, bytes, str | None, str | None]]) -> None:
    for query, body, content_type, job in requests:
        resp = send(rig, "test_arbitrary_bodies_queries_and_headers", query=query, body=body,
                    content_type=content_type, job=job)
        assert resp.status_code in (200, 400), resp.get_json()


@fuzz(ci=2100, local=80)
@given(requests=st.lists(near_valid(), min_size=1, max_size=5))
def test_near_valid_requests(
        rig: Rig, requests: list[tuple[str, bytes, str | None, str | None, str]]) -> None:
    for query, body, content_type, job, named in requests:
        resp = send(rig, "test_near_valid_requests", query=query, body=body,
                    content_type=content_type, job=job)
        if not named:
            assert resp.status_code == 200, resp.get_json()
        else:
            assert resp.status_code == 400, resp.get_json()
            assert named in resp.get_json()["error"]


METHODS = ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
ODD_PATHS = ["/scrape/", "/scrape/bdl_games_scraper", "/scraper", "/scraper/", "/scrapers",
             "/health", "//scrape", "/Scrape", "/scrape%00", "/scrape;x", "/", *(
                 f"/scraper/{name}" for name in NAMES)]
paths = st.sampled_from([ENDPOINT, *ODD_PATHS]) | st.text(max_size=24).map(
    lambda s: "/scraper/" + quote(s, safe="%;"))


@fuzz(ci=400, local=40)
@given(requests=st.lists(st.tuples(st.sampled_from(["POST", *METHODS]), paths, queries, bodies,
                                   content_types), min_size=1, max_size=5))
def test_other_methods_and_paths(
        rig: Rig, requests: list[tuple[str, str, str, bytes, str | None]]) -> None:
    """Only a POST to ``/scrape`` or ``/scraper/<name>`` may run a scraper (``send`` checks
    that nothing else left a trace)."""
    for method, path, query, body, content_type in requests:
        resp = send(rig, "test_other_methods_and_paths", method, path, query=query, body=body,
                    content_type=content_type)
        assert resp.status_code in expected_statuses(method, path), resp.get_data()[:200]


def expected_statuses(method: str, path: str) -> set[int]:
    segments = path.split("/")
    if path == ENDPOINT or (len(segments) == 3 and segments[1] == "scraper" and segments[2]
                            and "%" not in segments[2]):
        return {200, 400} if method == "POST" else {200} if method == "OPTIONS" else {405}
    if path in ("/scrapers", "/health"):
        return {200} if method in ("GET", "HEAD", "OPTIONS") else {405}
    if path.startswith("/scraper/"):  # percent-escapes: any route, or none
        return {200, 400, 404, 405, 308}
    return {404, 308}


def test_regression_input_that_caused_500s_is_now_400_and_leaves_no_trace(rig: Rig) -> None:
    """Found by the fuzzer, each a 500 before: a body nested deeper than the JSON parser
    goes (RecursionError); an ``environment`` of 65-256 characters (the option allowed 256,
    the column 64, so the run wrote its file and then its row was refused); a lone surrogate
    escape in an option (unwritable to BigQuery); and, as a 200 now, a Cloud Scheduler job
    name longer than the ``triggered_by`` column (cut to fit)."""
    valid = {"scraper": "bdl_games_scraper", "date": "2026-11-28"}
    for body, named in [(b"[" * 100_000, "JSON object"),
                        (json.dumps({**valid, "environment": "e" * 65}).encode(),
                         "'environment'"),
                        (json.dumps({**valid, "workflow": "w\ud800"}).encode(), "'workflow'")]:
        resp = send(rig, "regression", body=body)
        assert resp.status_code == 400 and named in resp.get_json()["error"]
    resp = send(rig, "regression", body=json.dumps(valid).encode(), job="j" * 600)
    assert resp.status_code == 200
    assert rig.store.rows[-1]["triggered_by"] == ("scheduler:" + "j" * 600)[:256]

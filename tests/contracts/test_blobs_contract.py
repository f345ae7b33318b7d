"""The Blobs contract, run against every adapter that needs no cloud."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.blobs import BlobNotFound, Blobs, InMemoryBlobs, LocalBlobs, blobs_for
from outbox.errors import ConfigError


@pytest.fixture(params=["memory", "local"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    return InMemoryBlobs() if request.param == "memory" else LocalBlobs(tmp_path)


def test_what_is_written_reads_back(blobs: Blobs) -> None:
    uri = blobs.write("ball-dont-lie/games/2026-11-28/20261128_100000.json", b'{"data": []}')
    assert uri.endswith("ball-dont-lie/games/2026-11-28/20261128_100000.json")
    assert blobs.read(uri) == b'{"data": []}'


def test_writing_again_overwrites(blobs: Blobs) -> None:
    uri = blobs.write("a/b.json", b"1")
    assert blobs.write("a/b.json", b"2") == uri
    assert blobs.read(uri) == b"2"


def test_a_missing_object_is_blob_not_found(blobs: Blobs) -> None:
    uri = blobs.write("a/b.json", b"1")
    with pytest.raises(BlobNotFound):
        blobs.read(uri.replace("b.json", "c.json"))


@pytest.mark.parametrize("path", ["", "/", "../etc/passwd", "a/../../b"])
def test_paths_cannot_escape(blobs: Blobs, path: str) -> None:
    with pytest.raises(ConfigError):
        blobs.write(path, b"x")


def test_local_blobs_refuse_uris_outside_their_root(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path / "root")
    with pytest.raises(ConfigError):
        blobs.read((tmp_path / "elsewhere.json").as_uri())
    with pytest.raises(ConfigError):
        blobs.read("gs://bucket/x.json")


def test_locations_pick_the_adapter(tmp_path: Path) -> None:
    assert isinstance(blobs_for(tmp_path.as_uri()), LocalBlobs)
    assert isinstance(blobs_for(str(tmp_path)), LocalBlobs)
    with pytest.raises(ConfigError):
        blobs_for("s3://bucket")

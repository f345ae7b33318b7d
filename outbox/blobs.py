"""Where raw scraper output lives: a tiny port with gs:// and file:// adapters.

Scrapers write raw JSON here and put the URI in their log row's ``gcs_path``;
processors read it back from that URI. ``gs://`` goes through
google-cloud-storage; ``file://`` is a real adapter for the local stack and
tests (no emulator needed). :class:`InMemoryBlobs` is the test double; all
three pass ``tests/contracts/test_blobs_contract.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from google.api_core import exceptions as gexc

from outbox.errors import ConfigError, PermanentError, TransientError


class BlobNotFound(PermanentError):
    """The object at a URI does not exist."""


class Blobs(Protocol):
    """Writes and reads whole objects by path.

    ``write`` overwrites and returns the object's URI; ``read`` raises
    :class:`BlobNotFound` for a missing object and
    :class:`~outbox.errors.TransientError` when the store may recover.
    Thread-safe.
    """

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str: ...

    def read(self, uri: str) -> bytes: ...


def _clean_path(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ConfigError(f"blob path {path!r} is empty or escapes its root")
    return "/".join(parts)


class LocalBlobs:
    """``file://`` objects under a root directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str:
        target = self.root / _clean_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # readers never see half a file
        return target.as_uri()

    def read(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ConfigError(f"LocalBlobs reads file:// URIs, not {uri!r}")
        path = Path(unquote(parsed.path)).resolve()
        if self.root not in path.parents:
            raise ConfigError(f"{uri!r} is outside {self.root}")
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no object at {uri}") from exc


class GcsBlobs:
    """``gs://bucket/path`` objects through google-cloud-storage."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        from google.cloud import storage

        self.client = client or storage.Client()
        self.bucket = bucket

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str:
        name = _clean_path(path)
        try:
            self.client.bucket(self.bucket).blob(name).upload_from_string(
                data, content_type=content_type
            )
        except gexc.NotFound as exc:
            raise ConfigError(f"bucket {self.bucket} does not exist") from exc
        except (gexc.ServerError, gexc.TooManyRequests, ConnectionError) as exc:
            raise TransientError(f"write gs://{self.bucket}/{name}: {exc}") from exc
        return f"gs://{self.bucket}/{name}"

    def read(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ConfigError(f"GcsBlobs reads gs://bucket/path URIs, not {uri!r}")
        try:
            data: bytes = (
                self.client.bucket(parsed.netloc).blob(parsed.path.lstrip("/")).download_as_bytes()
            )
        except gexc.NotFound as exc:
            raise BlobNotFound(f"no object at {uri}") from exc
        except (gexc.ServerError, gexc.TooManyRequests, ConnectionError) as exc:
            raise TransientError(f"read {uri}: {exc}") from exc
        return data


class InMemoryBlobs:
    """The test double: ``mem://`` URIs in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str:
        uri = f"mem://{_clean_path(path)}"
        with self._lock:
            self.objects[uri] = bytes(data)
        return uri

    def read(self, uri: str) -> bytes:
        with self._lock:
            try:
                return self.objects[uri]
            except KeyError as exc:
                raise BlobNotFound(f"no object at {uri}") from exc


def blobs_for(location: str) -> Blobs:
    """``gs://bucket`` or ``file:///dir`` (or a plain directory) to an adapter."""
    parsed = urlparse(location)
    if parsed.scheme == "gs":
        return GcsBlobs(parsed.netloc)
    if parsed.scheme in ("file", ""):
        return LocalBlobs(unquote(parsed.path) if parsed.scheme else location)
    raise ConfigError(f"unsupported storage location {location!r}; use gs:// or file://")

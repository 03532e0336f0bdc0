"""Record a window's responses while it is fetched, and replay them with no network at all.

A recording is a folder next to the window's file, `_<stem>.recording/`:

- `responses.jsonl`: one canonical JSON record per response, in the order received: the
  request (method, URL and params without credentials), the status, the headers the
  product reads, the final URL and the body's SHA-256 and size;
- `bodies/<hex>.gz`: each distinct body once, gzip (stdlib, mtime 0), named by its hash;
- `recording.json`: the manifest, written last: profile, plan (body and hash), window,
  each record's hash, the `response_hash` and the content hash of the file it produced.

`response_hash` is the SHA-256 of `responses.jsonl`, i.e. over the ordered response
records; each record names its body by hash, so it covers the bodies too. While a window
is in flight the records are staged with its pages, so a resumed window keeps recording
where its checkpoint left off. Auth headers are never part of a record, credentials are
stripped from recorded URLs and params, and error bodies are stored scrubbed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import pyarrow.fs as pafs

from ..core.canonical import canonical_bytes, format_rfc3339, sha256_hex
from ..core.catalog import ResolvedProfile
from ..core.plan import Plan
from ..core.profile import ConnectorSpec
from ..core.refs import format_ref
from ..core.windows import Window
from .errors import RecordingCorrupt, RecordingMismatch, RecordingNotFound
from .http import GuardedResponse
from .redact import REDACTED, Redactor
from .storage import Storage

__all__ = ["PageClient", "RecordTo", "RecordedWindow", "ReplayFrom", "WindowRecording",
           "recording_enabled", "recording_name"]

FORMAT_VERSION = 1
MANIFEST = "recording.json"
RESPONSES = "responses.jsonl"
BODIES = "bodies"
SUFFIX = ".recording"
#: the response headers the product reads: continuation (Link), totals, Retry-After and
#: the content type (plus a profile's `pagination.totalHeader`); nothing else
#: (Set-Cookie and friends) is kept
RECORDED_HEADERS = ("content-type", "link", "retry-after", "x-total-count")
_DONE = object()
#: gzip level: level 1 compresses JSON pages about 4x at a fraction of level 6's CPU
GZIP_LEVEL = 1


def recording_enabled(spec: ConnectorSpec, env: str, override: bool | None = None) -> bool:
    """Whether a window of this profile is recorded: an explicit override (resource, CLI)
    wins, then the profile's `recording.enabled`, then the default: on in dev only."""
    if override is not None:
        return override
    if spec.recording is not None:
        return spec.recording.enabled
    return env == "dev"


def recording_name(relative: str) -> str:
    """The recording folder of a window file: `a/b/<stem>.parquet` -> `a/b/_<stem>.recording`.

    The `_` keeps it out of dataset discovery (pyarrow, Spark and Hive skip `_` and `.`
    names), so a connector's folder still reads as one Parquet dataset."""
    parent, slash, name = relative.rpartition("/")
    return f"{parent}{slash}_{name.removesuffix('.parquet')}{SUFFIX}"


class PageClient(Protocol):
    """What the executor asks of a client: one GET, answered by the network or a recording,
    and the redactor that knows the run's secrets."""

    redactor: Redactor

    def get(self, url: str, params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> GuardedResponse: ...


class _Credentials:
    """Strips credentials from a request the same way when recording and when replaying.

    A credential is the profile's auth query parameter or a parameter holding a secret
    value this run resolved (or, on replay, the `[REDACTED]` that replaced one). Only
    known values are scrubbed, never credential-looking names: an upstream's own
    `token=` cursor must replay as it was sent, or its pages would look all alike.
    """

    def __init__(self, query_param: str | None, redactor: Redactor,
                 headers: tuple[str, ...] = RECORDED_HEADERS) -> None:
        self._param = (query_param or "").lower()
        self._redactor = redactor
        self._headers = headers

    def _is_credential(self, name: str, value: str) -> bool:
        return (name.lower() == self._param or REDACTED in value
                or self._redactor.found_in(value.encode("utf-8", "surrogateescape")))

    def url(self, url: str) -> str:
        parsed = httpx.URL(url)
        kept = [(k, v) for k, v in parsed.params.multi_items() if not self._is_credential(k, v)]
        stripped = (parsed.copy_with(params=httpx.QueryParams(kept), fragment=None) if kept
                    else parsed.copy_with(query=None, fragment=None))
        return self._redactor.scrub_values(str(stripped))

    def params(self, params: Mapping[str, str] | None) -> dict[str, str]:
        return {k: v for k, v in sorted((params or {}).items())
                if not self._is_credential(k, v)}

    def request(self, url: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        return {"method": "GET", "url": self.url(url), "params": self.params(params)}

    def headers(self, headers: httpx.Headers) -> dict[str, str]:
        return {name: self._redactor.scrub_values(headers[name]) for name in self._headers
                if name in headers}


def _scrubbed_body(response: GuardedResponse) -> bytes:
    """The body as recorded: no secret value in it, and an error body (which only feeds an
    error message, and may quote a credential back) fully scrubbed like its excerpt."""
    body = response.content
    if not 200 <= response.status_code < 300:
        text = body.decode("utf-8", "surrogateescape")
        return response.redactor.scrub(text).encode("utf-8", "surrogateescape")
    if not response.redactor.found_in(body):
        return body
    text = response.redactor.scrub_values(body.decode("utf-8", "surrogateescape"))
    return text.encode("utf-8", "surrogateescape")


def _body_path(folder: Path | str, digest: str) -> str:
    return f"{folder}/{BODIES}/{digest.removeprefix('sha256:')}.gz"


@dataclass(frozen=True)
class RecordedWindow:
    """What a recorded or replayed window adds to its result."""

    response_hash: str
    uri: str
    bytes: int
    responses: int
    replayed: bool
    #: the content hash of the file the recorded run wrote
    content_hash: str


class _Recorder:
    """Appends one window's response records to its staging folder, then publishes them."""

    offline = False

    def __init__(self, folder: Path, storage: Storage, relative: str,
                 resolved: ResolvedProfile, plan: Plan, window: Window) -> None:
        self.folder = folder
        self._storage = storage
        self._relative = relative
        self._resolved = resolved
        self._plan = plan
        self._window = window
        self._credentials: _Credentials | None = None
        self._file: Any = None
        self.count = 0
        self._page = 0
        self._last_request: dict[str, Any] | None = None
        # Bodies are scrubbed, hashed, gzipped and written on a thread of their own (zlib
        # and hashlib release the GIL), off the fetch loop's path.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _lines(self) -> list[bytes]:
        path = self.folder / RESPONSES
        if not path.is_file():
            return []
        with path.open("rb") as handle:
            return [line for line in handle if line.endswith(b"\n")]

    def can_resume(self, responses: int | None) -> bool:
        """Whether the staged records reach the checkpoint with every body they name (a
        checkpoint taken without recording cannot be continued by a recorded window)."""
        if responses is None:
            return False
        kept = self._lines()[:responses]
        return len(kept) == responses and all(
            Path(_body_path(self.folder, json.loads(line)["body"])).is_file() for line in kept)

    def begin(self, responses: int) -> None:
        """Start empty, or keep the first `responses` records (a resume after a checkpoint)."""
        lines = self._lines()[:responses] if responses else []
        if not responses:
            shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / BODIES).mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{RESPONSES}.tmp"
        tmp.write_bytes(b"".join(lines))
        os.replace(tmp, self.folder / RESPONSES)
        self.count = len(lines)
        if lines:
            last = json.loads(lines[-1])
            self._page, self._last_request = last["page"], last["request"]
        self._file = (self.folder / RESPONSES).open("ab")
        self._thread = threading.Thread(target=self._run, name="chartly-recording",
                                        daemon=True)
        self._thread.start()

    def open_client(self, build: Callable[[], Any]) -> _RecordingClient:
        client = build()
        spec = self._resolved.spec
        total = getattr(spec.pagination, "total_header", None)
        self._credentials = _Credentials(
            spec.auth.credential_param(), client.redactor,
            RECORDED_HEADERS + ((total.lower(),) if total else ()))
        return _RecordingClient(client, self)

    def record(self, url: str, params: Mapping[str, str] | None,
               response: GuardedResponse) -> None:
        """Queue one response for the writer thread (scrub, hash, gzip, append)."""
        assert self._credentials is not None
        if self._error is not None:
            raise self._error
        request = self._credentials.request(url, params)
        if request != self._last_request:  # a retry repeats its page's request
            self._page += 1
            self._last_request = request
        self._queue.put((self._page, request, response))
        self.count += 1

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _DONE:
                self._write(*item)
        except BaseException as exc:  # handed to the fetching thread by record/finish
            self._error = exc
            while self._queue.get() is not _DONE:  # unblock a waiting record
                pass

    def _write(self, page: int, request: dict[str, Any], response: GuardedResponse) -> None:
        """Body first, then its record: a staged record always names a staged body."""
        assert self._credentials is not None and self._file is not None
        body = _scrubbed_body(response)
        digest = sha256_hex(body)
        blob = Path(_body_path(self.folder, digest))
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0))
            os.replace(tmp, blob)
        record = {"page": page, "request": request, "status": response.status_code,
                  "headers": self._credentials.headers(response.headers),
                  "url": response.url, "redirects": list(response.redirects),
                  "body": digest, "body_bytes": len(body)}
        self._file.write(canonical_bytes(record) + b"\n")
        self._file.flush()

    def _stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def finish(self, *, content_hash: str, records: int, pages: int) -> RecordedWindow:
        """Publish the recording next to the window's file; the manifest goes last."""
        self._stop()
        if self._error is not None:
            raise self._error
        self._close()
        lines = self._lines()
        whole = hashlib.sha256()
        hashes = []
        for line in lines:
            whole.update(line)
            hashes.append(sha256_hex(line))
        response_hash = "sha256:" + whole.hexdigest()
        manifest = {
            "format": FORMAT_VERSION, "ref": format_ref(self._resolved.ref),
            "resolved_hash": self._resolved.hash, "plan_hash": self._plan.plan_hash,
            "plan": self._plan.body, "window": self._window.to_dict(),
            "records": records, "pages": pages, "content_hash": content_hash,
            "response_hash": response_hash, "responses": hashes,
        }
        storage = self._storage
        target = storage.path_of(recording_name(self._relative))
        fs = storage.fs
        if fs.get_file_info(target).type == pafs.FileType.Directory:
            fs.delete_dir(target)  # an older recording of this window
        fs.create_dir(f"{target}/{BODIES}", recursive=True)
        size = 0
        for digest in sorted({json.loads(line)["body"] for line in lines}):
            size += _publish_file(storage, Path(_body_path(self.folder, digest)),
                                  _body_path(target, digest))
        size += _put(fs, f"{target}/{RESPONSES}", b"".join(lines))
        size += _put(fs, f"{target}/{MANIFEST}", canonical_bytes(manifest) + b"\n")
        return RecordedWindow(response_hash, storage.uri_of(target), size, len(lines), False,
                              content_hash)

    def abort(self, keep: bool) -> None:
        """After a failure: keep the staged records for a resume, or remove them."""
        self._stop()
        self._close()
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _publish_file(storage: Storage, source: Path, path: str) -> int:
    """Move a staged file into place (a rename when staging shares the local disk)."""
    if storage.is_local:
        try:
            os.replace(source, path)
            return os.path.getsize(path)
        except OSError:  # staging on another device: copy instead
            pass
    return _put(storage.fs, path, source.read_bytes())


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> int:
    with fs.open_output_stream(path, compression=None) as sink:
        sink.write(data)
    return len(data)


class _RecordingClient:
    """The guarded client, with every response it returns appended to the recording."""

    def __init__(self, client: Any, recorder: _Recorder) -> None:
        self._client = client
        self._recorder = recorder
        self.redactor: Redactor = client.redactor

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._client.close()

    def get(self, url: str, params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> GuardedResponse:
        response = self._client.get(url, params, headers)
        self._recorder.record(url, params, response)
        return response


@dataclass(frozen=True)
class RecordTo:
    """Record each window's responses under `storage`, next to where its file goes."""

    storage: Storage

    def session(self, resolved: ResolvedProfile, plan: Plan, window: Window, relative: str,
                staging: Path) -> _Recorder:
        return _Recorder(staging / "recording", self.storage, relative, resolved, plan, window)


@dataclass(frozen=True)
class ReplayFrom:
    """Replay a window from a recording instead of the network.

    `location` is a recording folder (it holds `recording.json`) or the root a `RecordTo`
    recorded under; `response_hash`, when given, is what the recording must still hash to
    (the value a partition's metadata kept).
    """

    location: str
    response_hash: str | None = None

    def session(self, resolved: ResolvedProfile, plan: Plan, window: Window, relative: str,
                staging: Path) -> _Replayer:
        return _Replayer(self._find(relative), plan, window, self.response_hash)

    def _find(self, relative: str) -> Storage:
        root = Storage.parse(self.location, field="--replay")
        for folder in (root.root, root.path_of(recording_name(relative))):
            if root.fs.get_file_info(f"{folder}/{MANIFEST}").type == pafs.FileType.File:
                return Storage(root.fs, folder, root.scheme, root.uri_of(folder), root.field)
        raise RecordingNotFound(
            f"{root.display!r} holds no recording of this window (looked for {MANIFEST} there "
            f"and under {recording_name(relative)})", field=root.field)


def _window_label(window: Window) -> str:
    return f"{format_rfc3339(window.start)}--{format_rfc3339(window.end)}"


def _differences(recorded: Any, current: Any, path: str) -> list[str]:
    """Dotted paths where two JSON values differ (leaves only)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [d for key in sorted(set(recorded) | set(current))
                for d in _differences(recorded.get(key), current.get(key), f"{path}.{key}")]
    if (isinstance(recorded, list) and isinstance(current, list)
            and len(recorded) == len(current)):
        return [d for i, (a, b) in enumerate(zip(recorded, current, strict=True))
                for d in _differences(a, b, f"{path}[{i}]")]
    return [] if recorded == current else [path]


class _Replayer:
    """Serves one window's recorded responses in order; never opens a socket."""

    offline = True

    def __init__(self, location: Storage, plan: Plan, window: Window,
                 expected_hash: str | None) -> None:
        self._fs = location.fs
        self._folder = location.root
        self._uri = location.display
        self._label = f"recording of window {_window_label(window)}"
        self.manifest = self._read_manifest()
        recorded_plan = self.manifest.get("plan")
        if self.manifest.get("plan_hash") != plan.plan_hash:
            fields = [f for f in _differences(recorded_plan, plan.body, "plan")
                      if f != "plan.plan_hash"] or ["plan.plan_hash"]
            shown = ", ".join(fields[:12]) + (f" and {len(fields) - 12} more"
                                              if len(fields) > 12 else "")
            raise RecordingMismatch(
                f"{self._label} was made by plan {self.manifest.get('plan_hash')}, not this "
                f"profile's plan {plan.plan_hash}; differing fields: {shown}", field="--replay")
        if expected_hash is not None and self.manifest["response_hash"] != expected_hash:
            raise RecordingCorrupt(f"{self._label}: {MANIFEST} holds response hash "
                                   f"{self.manifest['response_hash']}, the partition recorded "
                                   f"{expected_hash}")
        self._lines = self._read(f"{self._folder}/{RESPONSES}", RESPONSES).splitlines(True)
        self.stored_bytes = sum(len(line) for line in self._lines)
        self._hasher = hashlib.sha256()
        self.count = 0

    def _read(self, path: str, what: str) -> bytes:
        try:
            with self._fs.open_input_stream(path, compression=None) as source:
                return bytes(source.read())
        except (OSError, FileNotFoundError):
            raise RecordingCorrupt(f"{self._label}: {what} is missing or unreadable") from None

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self._read(f"{self._folder}/{MANIFEST}", MANIFEST))
            keys = ("format", "plan_hash", "response_hash", "responses", "content_hash")
            if any(k not in manifest for k in keys) or manifest["format"] != FORMAT_VERSION:
                raise ValueError("not a manifest")
        except (ValueError, KeyError, TypeError):
            raise RecordingCorrupt(f"{self._label}: {MANIFEST} is not a recording manifest "
                                   f"of format {FORMAT_VERSION}") from None
        return manifest

    def can_resume(self, responses: int | None) -> bool:
        return False  # a replay is cheap: it always starts at its first page

    def begin(self, responses: int) -> None:
        pass

    def open_client(self, build: Callable[[], Any]) -> _ReplayClient:
        return _ReplayClient(self)

    def serve(self, url: str, params: Mapping[str, str] | None) -> GuardedResponse:
        """The next recorded response, after checking the run asks for the recorded request."""
        index = self.count
        hashes: list[str] = self.manifest["responses"]
        if index >= len(self._lines) or index >= len(hashes):
            raise RecordingMismatch(f"{self._label} ends after {index} response(s) but the run "
                                    "asked for another request", field="--replay")
        line = self._lines[index]
        try:
            record = json.loads(line)
            page = record["page"]
        except (ValueError, KeyError, TypeError):
            record, page = None, "?"
        where = f"{self._label}: response {index + 1} (page {page})"
        if sha256_hex(line) != hashes[index] or record is None:
            raise RecordingCorrupt(f"{where} does not match its recorded hash")
        credentials = _Credentials(None, Redactor())
        asked = credentials.request(url, params)
        if asked != record["request"]:
            raise RecordingMismatch(f"{where}: the run requested {asked['url']} "
                                    f"{asked['params']} but the recording holds "
                                    f"{record['request']['url']} {record['request']['params']}",
                                    field="--replay")
        body = self._body(record["body"], where)
        self._hasher.update(line)
        self.count += 1
        return GuardedResponse(int(record["status"]), httpx.Headers(record["headers"]), body,
                               record["url"], tuple(record["redirects"]))

    def _body(self, digest: str, where: str) -> bytes:
        compressed = self._read(_body_path(self._folder, digest), f"the body of {where}")
        self.stored_bytes += len(compressed)
        try:
            body = gzip.decompress(compressed)
        except (OSError, EOFError, ValueError):
            raise RecordingCorrupt(f"{where}: its body is not valid gzip") from None
        if sha256_hex(body) != digest:
            raise RecordingCorrupt(f"{where}: its body does not match its hash")
        return body

    def finish(self, *, content_hash: str, records: int, pages: int) -> RecordedWindow:
        """Check the run consumed the whole recording, and that it still hashes right."""
        left = len(self._lines) - self.count
        if left:
            raise RecordingMismatch(f"{self._label}: the run ended with {left} recorded "
                                    "response(s) not asked for", field="--replay")
        response_hash = "sha256:" + self._hasher.hexdigest()
        if response_hash != self.manifest["response_hash"]:
            raise RecordingCorrupt(f"{self._label}: {RESPONSES} hashes to {response_hash}, "
                                   f"not the recorded {self.manifest['response_hash']}")
        return RecordedWindow(response_hash, self._uri, self.stored_bytes, self.count, True,
                              self.manifest["content_hash"])

    def abort(self, keep: bool) -> None:
        pass


class _ReplayClient:
    """Stands in for the guarded client during a replay: answers from the recording only."""

    def __init__(self, replayer: _Replayer) -> None:
        self._replayer = replayer
        self.redactor = Redactor()  # a replay resolves no secret

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass

    def get(self, url: str, params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> GuardedResponse:
        return self._replayer.serve(url, params)


WindowRecording = _Recorder | _Replayer

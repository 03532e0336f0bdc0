"""Helpers for the runtime tests: the six dev profiles against a live sandbox, variants,
ground truth per profile, and a sleeper that records instead of sleeping.

Every test here talks to a real sandbox over loopback HTTP; nothing is mocked below
`fetch_window` except the sleep function (so Retry-After and backoff are observed, never
waited for).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from chartly_dagster.core.catalog import ProfileCatalog, ResolvedProfile
from chartly_dagster.core.plan import Limits, build_plan
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime import ratelimit
from chartly_dagster.runtime.egress import EnvPolicy
from chartly_dagster.runtime.executor import (
    Checkpoint,
    NetworkOptions,
    PageProgress,
    RunEvent,
    Seams,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.storage import read_window_file
from chartly_dagster.sandbox import Sandbox, SandboxConfig, run_sandbox
from chartly_dagster.sandbox.data import Stream
from tests.support.sandbox import copy_profiles, sandbox_config
from tests.support.secrets import SECRETS, sandbox_secrets

#: profile name -> (namespace, version, sandbox endpoint)
PROFILES: dict[str, tuple[str, str, str]] = {
    "sales-events": ("tenant-demo/proj-sales", "1.0.0", "/v1/events"),
    "sales-feed": ("tenant-demo/proj-sales", "1.0.0", "/v1/feed"),
    "orders": ("tenant-demo/proj-sales", "2.1.0", "/v2/orders"),
    "invoices": ("tenant-demo/proj-sales", "1.0.0", "/v1/invoices"),
    "metrics": ("tenant-demo/proj-ops", "1.0.0", "/v1/metrics"),
    "tickets": ("tenant-demo/proj-ops", "1.0.0", "/v1/tickets"),
}
ID_FIELDS = {"sales-events": "id", "sales-feed": "id", "orders": "order_id",
             "invoices": "invoice_id", "metrics": "metric_id", "tickets": "ticket_id"}
DAY = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")
SPLIT = Window.parse("2026-02-01T10:17:00Z", "2026-02-01T13:43:00Z")
ALL_SECRETS = tuple(SECRETS.values())


def ref_text(name: str, variant: str = "dev") -> str:
    namespace, version, _ = PROFILES[name]
    return f"{namespace}::connector/{name}@{version}#{variant}"


class RecordingSleep:
    """A `sleep` that records each requested delay and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class Live:
    """A running sandbox, a writable copy of the shipped profiles pointed at it, an out dir."""

    sandbox: Sandbox
    profiles_dir: Path
    out: Path
    _catalog: ProfileCatalog | None = field(default=None, repr=False)
    _resolved: dict[tuple[str, str], ResolvedProfile] = field(default_factory=dict, repr=False)

    @property
    def catalog(self) -> ProfileCatalog:
        if self._catalog is None:
            catalog = ProfileCatalog.load(self.profiles_dir)
            catalog.raise_for_issues()
            self._catalog = catalog
        return self._catalog

    def resolve(self, name: str, variant: str = "dev") -> ResolvedProfile:
        key = (name, variant)
        if key not in self._resolved:
            self._resolved[key] = self.catalog.resolve(parse_ref(ref_text(name, variant)))
        return self._resolved[key]

    def reset(self, out: Path) -> Live:
        """The same sandbox and profiles for another test: no faults, fresh ordinals."""
        self.sandbox.faults.clear()
        self.sandbox.clear_requests()
        self.out = out
        return self

    def add_variant(self, name: str, variant: str, spec_patch: dict[str, Any]) -> str:
        """A new variant of `name`: the dev variant with `spec_patch` deep-merged into it."""
        if (name, variant) in self._resolved:
            return variant
        path = next(p for p in self.profiles_dir.rglob("*.yaml")
                    if yaml.safe_load(p.read_text("utf-8"))["metadata"]["name"] == name)
        data = yaml.safe_load(path.read_text("utf-8"))
        body = copy.deepcopy(data["variants"]["dev"])
        _merge(body.setdefault("spec", {}), spec_patch)
        body["spec"].pop("golden", None)
        data["variants"][variant] = body
        path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
        self._catalog = None
        self._resolved.clear()
        return variant

    def fetch(self, name: str, window: Window, *, variant: str = "dev",
              sleep: RecordingSleep | None = None, dest: Path | None = None,
              limits: Limits | None = None, resume: Checkpoint | None = None,
              on_page: Callable[[PageProgress], None] | None = None,
              on_progress: Callable[[RunEvent], None] | None = None,
              env_policy: EnvPolicy | None = None) -> WindowResult:
        """Fetch like the Dagster assets when `on_page`, `on_progress` or `resume` is given
        (pages staged, resumable), else like the CLI."""
        resolved = self.resolve(name, variant)

        def report(event: RunEvent) -> None:
            if on_progress is not None:
                on_progress(event)
            if on_page is not None and isinstance(event, PageProgress):
                on_page(event)

        resumable = on_page is not None or on_progress is not None or resume is not None
        return fetch_window(
            resolved, window, build_plan(resolved, window, limits),
            target=WindowTarget.at(str(dest or self.out), resumable=resumable),
            network=NetworkOptions("dev", sandbox_secrets(), env_policy), resume=resume,
            on_progress=report if resumable else None,
            seams=Seams(sleep=sleep or RecordingSleep(), rng=random.Random(0)))

    def truth(self, name: str, window: Window) -> list[dict[str, Any]]:
        return self.sandbox.ground_truth(PROFILES[name][2], window.start, window.end)

    def truth_ids(self, name: str, window: Window) -> list[str]:
        return [str(r[ID_FIELDS[name]]) for r in self.truth(name, window)]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


@pytest.fixture
def fresh_rate_buckets() -> Iterator[None]:
    """Each test starts with full request budgets (buckets are process-wide by design)."""
    ratelimit._BUCKETS.clear()
    yield
    ratelimit._BUCKETS.clear()


#: A budget far above any test's request rate. Retry tests count the sleeps they see, and
#: a process's bucket starts with one token, so the shipped rates would add budget waits;
#: rate-limit tests set their own rate in a variant.
UNLIMITED_RATE = {"maxRequestsPerMinute": 600_000, "burst": 1000}


def live_sandbox(folder: Path, config: SandboxConfig | None = None) -> Iterator[Live]:
    with run_sandbox(config or sandbox_config()) as sb:
        profiles = copy_profiles(folder / "profiles", sb.port)
        for path in profiles.rglob("*.yaml"):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            doc["variants"]["dev"]["spec"]["rateLimit"] = dict(UNLIMITED_RATE)
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        yield Live(sb, profiles, folder / "out")


@pytest.fixture(scope="module")
def live_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from live_sandbox(tmp_path_factory.mktemp("live"))


@pytest.fixture
def live(live_module: Live, tmp_path: Path) -> Live:
    """Shipped profiles against a sandbox at 60 events/hour per endpoint (shared per module;
    faults and request ordinals are reset for each test, output goes to its tmp_path)."""
    return live_module.reset(tmp_path / "out")


def written_ids(result: WindowResult) -> list[str]:
    return read_window_file(result.uri).column("record_id").to_pylist()


def files_under(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern)) if root.exists() else []


def gap_window(stream: Stream, day: datetime, minutes: int = 20) -> Window:
    """A `minutes`-long window of `stream` on `day` holding no event (stream must be sparse)."""
    start_s = int(day.timestamp())
    i = stream.first_index_at_or_after(start_s + 3600)  # away from midnight
    while True:
        t, following = stream.time_of(i), stream.time_of(i + 1)
        lo = (t // 60 + 1) * 60
        if following >= lo + (minutes + 1) * 60:
            begin = datetime.fromtimestamp(lo, UTC)
            window = Window(begin, begin + timedelta(minutes=minutes))
            assert window.start.date() == window.end.date() == day.date()
            return window
        i += 1


def rows_without_wall_clock(table: pa.Table) -> list[dict[str, Any]]:
    return table.drop_columns(["collected_at", "ingested_at"]).to_pylist()


def last_resume(progress: list[PageProgress]) -> Checkpoint:
    """The checkpoint a caller would persist (in its stored form) from the last page it saw."""
    return Checkpoint.from_contract(progress[-1].checkpoint.to_contract())

"""What the Dagster UI shows per connector: its freshness policy and tags that are the value."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey
from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy

from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.errors import ChartlyError
from chartly_dagster.integration import build_definitions
from chartly_dagster.integration import metadata as md
from tests.support.paths import PROFILES

TAG_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")


def test_every_shipped_profile_declares_freshness_and_its_asset_carries_it() -> None:
    resolved = ProfileCatalog.load(PROFILES).resolve_all()
    assert resolved and all(r.spec.freshness is not None for r in resolved)
    graph = build_definitions(PROFILES, env="dev").resolve_asset_graph()
    for profile in (r for r in resolved if "dev" in r.spec.envs):
        key = AssetKey(["tenant-demo", profile.ref.project, profile.connector])
        policy = graph.get(key).freshness_policy
        assert isinstance(policy, TimeWindowFreshnessPolicy), key
        freshness = profile.spec.freshness
        assert freshness is not None and freshness.warn_after_minutes is not None
        assert policy.fail_window.to_timedelta() == timedelta(
            minutes=freshness.fail_after_minutes)
        assert policy.warn_window is not None and policy.warn_window.to_timedelta() == (
            timedelta(minutes=freshness.warn_after_minutes))


def _with_spec(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    doc = yaml.safe_load((PROFILES / "sales" / "orders.yaml").read_text(encoding="utf-8"))
    doc["spec"].update(changes)
    doc["spec"].pop("golden")
    doc["variants"] = {"dev": {"spec": {k: v for k, v in doc["variants"]["dev"]["spec"].items()
                                        if k != "golden"}}}
    (folder / "orders.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def test_a_profile_without_freshness_has_no_policy(tmp_path: Path) -> None:
    folder = _with_spec(tmp_path, freshness=None)
    graph = build_definitions(folder, env="dev").resolve_asset_graph()
    assert graph.get(AssetKey(["tenant-demo", "proj-sales", "orders"])).freshness_policy is None


@pytest.mark.parametrize(("freshness", "message"), [
    ({"failAfterMinutes": 60, "warnAfterMinutes": 60}, "warnAfterMinutes must be below"),
    ({"failAfterMinutes": 0}, "greater than or equal to 1"),
    ({"warnAfterMinutes": 10}, "failAfterMinutes"),
    ({"failAfterMinutes": 60, "staleAfter": 3}, "staleAfter"),
])
def test_freshness_is_validated(tmp_path: Path, freshness: dict[str, int],
                                message: str) -> None:
    catalog = ProfileCatalog.load(_with_spec(tmp_path, freshness=freshness))
    with pytest.raises(ChartlyError, match=message):
        catalog.raise_for_issues()


def test_tags_hold_only_whole_values_and_metadata_the_full_ref_and_hash() -> None:
    graph = build_definitions(PROFILES, env="dev").resolve_asset_graph()
    spec = graph.get(AssetKey(["tenant-demo", "proj-sales", "orders"]))
    assert {k: v for k, v in spec.tags.items() if k.startswith("chartly/")} == {
        md.TAG_ENV: "dev", md.TAG_TENANT: "tenant-demo", md.TAG_PROJECT: "proj-sales",
        md.TAG_CONNECTOR: "orders", md.TAG_VERSION: "2.1.0", md.TAG_VARIANT: "dev",
        md.TAG_CADENCE: "daily", md.TAG_PAGINATION: "offset"}
    for key in graph.get_all_asset_keys():
        for value in graph.get(key).tags.values():
            assert TAG_VALUE.match(value), (key, value)
            assert not re.fullmatch(r"[0-9a-f]{16,}", value), (key, value)  # no cut hash
    assert spec.metadata[md.DEF_RESOLVED_HASH].startswith("sha256:")
    assert len(spec.metadata[md.DEF_RESOLVED_HASH]) == len("sha256:") + 64
    assert spec.metadata[md.DEF_PROFILE_REF] == (
        "tenant-demo/proj-sales::connector/orders@2.1.0#dev")


def test_a_label_that_does_not_fit_a_tag_is_left_out_not_rewritten(tmp_path: Path) -> None:
    folder = _with_spec(tmp_path)
    doc = yaml.safe_load((folder / "orders.yaml").read_text(encoding="utf-8"))
    doc["metadata"]["labels"] = {"team": "integrations", "runbook": "https://wiki/x y",
                                 "long": "x" * 64}
    (folder / "orders.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    spec = build_definitions(folder, env="dev").resolve_asset_graph().get(
        AssetKey(["tenant-demo", "proj-sales", "orders"]))
    assert spec.tags["team"] == "integrations"
    assert "runbook" not in spec.tags and "long" not in spec.tags

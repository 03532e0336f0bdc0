"""The profile catalog: loading a tree, reporting every problem, resolving refs and variants."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartly_dagster.core.catalog import ProfileCatalog, check_run_scope, merge_patch
from chartly_dagster.core.errors import (
    ExitCode,
    PreconditionFailed,
    ProfileInvalid,
    ProfileNotFound,
    UnsafeOperationBlocked,
)
from chartly_dagster.core.refs import format_ref, parse_ref
from tests.support.offline import REF, base_doc, write_profile
from tests.support.paths import PROFILES


def test_shipped_catalog_loads_cleanly() -> None:
    catalog = ProfileCatalog.load(PROFILES)
    assert catalog.issues == []
    refs = [format_ref(r) for r in catalog.refs()]
    assert len(refs) == 18
    assert refs == sorted(refs)
    assert "tenant-demo/proj-sales::connector/orders@2.1.0#dev" in refs
    resolved = catalog.resolve_all()
    assert len({r.hash for r in resolved}) == 18


def test_every_invalid_file_is_reported(tmp_path: Path) -> None:
    write_profile(tmp_path, base_doc(), "ok.yaml")
    bad_mode = base_doc()
    bad_mode["metadata"]["name"] = "bad-mode"
    bad_mode["spec"]["pagination"]["mode"] = "bogus"
    write_profile(tmp_path, bad_mode, "a/bad-mode.yaml")
    typo = base_doc()
    typo["metadata"]["name"] = "typo"
    typo["spec"]["pagnation"] = typo["spec"].pop("pagination")
    write_profile(tmp_path, typo, "b/typo.yml")
    write_profile(tmp_path, "a: 1\na: 2\n", "c/dup.yaml")
    write_profile(tmp_path, "pagination: [\n", "d/syntax.yaml")
    catalog = ProfileCatalog.load(tmp_path)
    paths = {i.path for i in catalog.issues}
    assert paths == {"a/bad-mode.yaml", "b/typo.yml", "c/dup.yaml", "d/syntax.yaml"}
    assert catalog.issues == sorted(catalog.issues, key=lambda i: (i.path, i.field, i.message))
    assert [format_ref(r) for r in catalog.refs()] == [REF, REF + "#dev"]
    with pytest.raises(ProfileInvalid) as info:
        catalog.raise_for_issues()
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED
    assert len(info.value.errors) == len(catalog.issues)
    message = info.value.message
    for path in paths:
        assert path in message
    assert "a/bad-mode.yaml: spec.pagination.mode" in message
    assert "b/typo.yml: spec.pagnation" in message


def test_two_files_claiming_the_same_ref(tmp_path: Path) -> None:
    write_profile(tmp_path, base_doc(), "first.yaml")
    other = base_doc()
    other["metadata"]["description"] = "a copy"
    write_profile(tmp_path, other, "second/copy.yaml")
    catalog = ProfileCatalog.load(tmp_path)
    assert len(catalog.issues) == 1
    issue = catalog.issues[0]
    text = str(issue)
    assert "first.yaml" in text and "second/copy.yaml" in text
    assert REF in text


def test_hidden_and_non_yaml_files_are_ignored(tmp_path: Path) -> None:
    write_profile(tmp_path, base_doc(), "widgets.yaml")
    write_profile(tmp_path, "not: [valid\n", ".hidden/broken.yaml")
    write_profile(tmp_path, "not: [valid\n", "notes.txt")
    catalog = ProfileCatalog.load(tmp_path)
    assert catalog.issues == []
    assert len(catalog.refs()) == 2


def test_missing_folder_is_a_precondition(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed) as info:
        ProfileCatalog.load(tmp_path / "nope")
    assert info.value.exit_code == ExitCode.PRECONDITION_FAILED


def test_unknown_ref_and_variant_are_preconditions() -> None:
    catalog = ProfileCatalog.load(PROFILES)
    cases = [
        ("tenant-demo/proj-sales::connector/nope@1.0.0", "connector-profile"),
        ("tenant-demo/proj-sales::connector/sales-events@9.9.9", "connector-profile"),
        ("tenant-other/proj-sales::connector/sales-events@1.0.0", "connector-profile"),
        ("tenant-demo/proj-sales::connector/sales-events@1.0.0#qa", "variant"),
    ]
    for text, field in cases:
        with pytest.raises(ProfileNotFound) as info:
            catalog.resolve(parse_ref(text))
        assert info.value.exit_code == ExitCode.PRECONDITION_FAILED
        assert info.value.field == field


def test_run_scope() -> None:
    catalog = ProfileCatalog.load(PROFILES)
    dev = catalog.resolve(parse_ref("tenant-demo/proj-sales::connector/sales-events@1.0.0#dev"))
    check_run_scope(dev, env="dev", tenant="tenant-demo", project="proj-sales")
    with pytest.raises(UnsafeOperationBlocked) as blocked:
        check_run_scope(dev, env="dev", tenant="tenant-evil", project="proj-sales")
    assert blocked.value.exit_code == ExitCode.UNSAFE_BLOCKED
    with pytest.raises(UnsafeOperationBlocked):
        check_run_scope(dev, env="dev", tenant="tenant-demo", project="proj-ops")
    with pytest.raises(PreconditionFailed) as env:
        check_run_scope(dev, env="prod", tenant="tenant-demo", project="proj-sales")
    assert env.value.exit_code == ExitCode.PRECONDITION_FAILED
    assert env.value.field == "env"


# -- RFC 7386 merge patch -----------------------------------------------------------------------

@pytest.mark.parametrize(("target", "patch", "result"), [
    # The examples of RFC 7386, appendix A.
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7386_examples(target: object, patch: object, result: object) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_does_not_mutate_inputs() -> None:
    target = {"a": {"b": [1, 2]}, "c": 1}
    patch = {"a": {"b": [3]}, "c": None}
    merged = merge_patch(target, patch)
    assert merged == {"a": {"b": [3]}}
    assert target == {"a": {"b": [1, 2]}, "c": 1}
    assert patch == {"a": {"b": [3]}, "c": None}
    merged["a"]["b"].append(4)
    assert patch["a"]["b"] == [3]


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
    max_leaves=12,
)


# No deadline: a per-example time limit fails on a loaded machine, not on a wrong merge.
@settings(deadline=None)
@given(st.dictionaries(st.sampled_from("abcd"), json_docs, max_size=4),
       st.dictionaries(st.sampled_from("abcd"), json_docs, max_size=4))
def test_merge_patch_is_idempotent(target: dict, patch: dict) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    for key, value in patch.items():
        if value is None:
            assert key not in once
        elif not isinstance(value, dict):
            assert once[key] == value

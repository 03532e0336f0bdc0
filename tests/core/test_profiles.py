"""Profile model: validation errors name the field, unknown and duplicate keys are refused,
inline credentials are rejected without echoing them, variants are re-validated, resolved
profiles are frozen, and the JSON Schema agrees with the shipped files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from chartly_dagster.core.catalog import LoadIssue, ProfileCatalog, read_yaml
from chartly_dagster.core.profile import ConnectorProfile, profile_json_schema
from chartly_dagster.core.refs import parse_ref
from tests.support.offline import REF, base_doc, plan_args, run_cli, write_profile
from tests.support.paths import PROFILES

Mutation = Callable[[dict[str, Any]], Any]


def _issues(tmp_path: Path, doc: Any) -> list[LoadIssue]:
    write_profile(tmp_path, doc)
    return ProfileCatalog.load(tmp_path).issues


def _spec(**changes: Any) -> Mutation:
    return lambda d: d["spec"].update(changes)


def _in(section: str, **changes: Any) -> Mutation:
    return lambda d: d["spec"][section].update(changes)


def _drop(section: str, key: str) -> Mutation:
    return lambda d: d["spec"][section].pop(key)


BROKEN: list[tuple[str, Mutation, str]] = [
    ("bad pagination mode", _in("pagination", mode="bogus"), "spec.pagination.mode"),
    ("page size zero", _in("pagination", pageSize=0), "spec.pagination.pageSize"),
    ("cursor without response field", _drop("pagination", "responseField"), "spec.pagination"),
    ("offset without offsetParam",
     _spec(pagination={"mode": "offset", "pageSize": 10, "limitParam": "limit"}),
     "spec.pagination.offsetParam"),
    ("param for another mode", _in("pagination", pageParam="page"), "spec.pagination.pageParam"),
    ("missing pagination mode", _drop("pagination", "mode"), "spec.pagination.mode"),
    ("page size true", _in("pagination", pageSize=True), "spec.pagination.pageSize"),
    ("page size as text", _in("pagination", pageSize="500"), "spec.pagination.pageSize"),
    ("max pages true", _spec(limits={"maxPages": True}), "spec.limits.maxPages"),
    ("jitter as number", _spec(retry={"jitter": 1}), "spec.retry.jitter"),
    ("allowed port true", _in("egressPolicy", allowedPorts=[True]),
     "spec.egressPolicy.allowedPorts[0]"),
    ("total field and header", _in("pagination", totalField="total", totalHeader="X-Total"),
     "spec.pagination"),
    ("total header not a header", _in("pagination", totalHeader="X Total"), "spec.pagination"),
    ("total for time-window",
     _spec(pagination={"mode": "time-window", "sliceSeconds": 60, "totalField": "n"}),
     "spec.pagination.totalField"),
    ("unknown auth mode", _in("auth", mode="oauth"), "spec.auth.mode"),
    ("header name for bearer", _in("auth", headerName="X-Key"), "spec.auth.headerName"),
    ("ftp base url", _in("transport", baseUrl="ftp://api.widgets.example.invalid"),
     "spec.transport.baseUrl"),
    ("base url with query", _in("transport", baseUrl="https://api.widgets.example.invalid/?a=1"),
     "spec.transport.baseUrl"),
    ("timeout not an int", _in("transport", timeoutMs="fast"), "spec.transport.timeoutMs"),
    ("timeout too small", _in("transport", timeoutMs=1), "spec.transport.timeoutMs"),
    ("empty envs", _spec(envs=[]), "spec.envs"),
    ("unknown env", _spec(envs=["qa"]), "spec.envs[0]"),
    ("missing records.idField", _drop("records", "idField"), "spec.records.idField"),
    ("missing rateLimit", lambda d: d["spec"].pop("rateLimit"), "spec.rateLimit"),
    ("missing transport", lambda d: d["spec"].pop("transport"), "spec.transport"),
    ("ip in allowlist", _in("egressPolicy", dnsAllowlist=["10.0.0.1"]),
     "spec.egressPolicy.dnsAllowlist"),
    ("bare wildcard", _in("egressPolicy", dnsAllowlist=["*.invalid"]),
     "spec.egressPolicy.dnsAllowlist"),
    ("host outside allowlist", _in("egressPolicy", dnsAllowlist=["other.example.invalid"]),
     "spec"),
    ("cidr with host bits", _in("egressPolicy", allowedCidrs=["10.0.0.1/8"]),
     "spec.egressPolicy.allowedCidrs"),
    ("bearer without secretRef", _drop("auth", "secretRef"), "spec.auth.secretRef"),
    ("secret name uppercase", lambda d: d["spec"]["auth"]["secretRef"].update(name="Sales_API"),
     "spec.auth.secretRef.name"),
    ("POST request", _in("request", method="POST"), "spec.request.method"),
    ("relative path", _in("request", path="v1/widgets"), "spec.request.path"),
    ("dot-dot path", _in("request", path="/v1/../admin"), "spec.request.path"),
    ("Host header", _in("request", headers={"Host": "evil.example"}), "spec.request.headers"),
    ("naive partition start", _in("partitions", start="2026-01-01T00:00:00"),
     "spec.partitions.start"),
    ("unknown time zone", _in("partitions", timezone="Mars/Olympus"),
     "spec.partitions.timezone"),
    ("max pages zero", _spec(limits={"maxPages": 0}), "spec.limits.maxPages"),
    ("retry attempts too many", _spec(retry={"maxAttempts": 99}), "spec.retry.maxAttempts"),
    ("window format", _in("window", format="iso"), "spec.window.format"),
    ("version not semver", lambda d: d["metadata"].update(version="1.0"), "metadata.version"),
    ("namespace uppercase", lambda d: d["metadata"].update(namespace="Tenant/proj"),
     "metadata.namespace"),
    ("owner format", lambda d: d["metadata"].update(owners=["bob"]), "metadata.owners"),
    ("apiVersion", lambda d: d.update(apiVersion="chartly.io/v2"), "apiVersion"),
    ("kind", lambda d: d.update(kind="Deployment"), "kind"),
    ("variant name", lambda d: d["variants"].update(Dev={"spec": {}}), "variants"),
    ("variant touches namespace",
     lambda d: d["variants"]["dev"].update(metadata={"namespace": "x/y"}), "variants"),
]


@pytest.mark.parametrize(("label", "mutate", "field"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_profile_names_the_field(tmp_path: Path, label: str, mutate: Mutation,
                                        field: str) -> None:
    doc = base_doc()
    mutate(doc)
    issues = _issues(tmp_path, doc)
    assert issues, label
    assert {i.path for i in issues} == {"widgets.yaml"}
    assert field in [i.field for i in issues], [str(i) for i in issues]


def test_base_document_is_valid(tmp_path: Path) -> None:
    assert _issues(tmp_path, base_doc()) == []


@pytest.mark.parametrize(("where", "key"), [
    ("spec", "pagnation"),
    ("document", "extra"),
    ("transport", "verifyTls"),
    ("pagination", "pageSise"),
    ("metadata", "tenant"),
    ("secretRef", "value"),
])
def test_unknown_keys_are_rejected(tmp_path: Path, where: str, key: str) -> None:
    doc = base_doc()
    target = {"spec": doc["spec"], "document": doc, "transport": doc["spec"]["transport"],
              "pagination": doc["spec"]["pagination"], "metadata": doc["metadata"],
              "secretRef": doc["spec"]["auth"]["secretRef"]}[where]
    if key == "pagnation":
        target[key] = target.pop("pagination")
    else:
        target[key] = False if key == "verifyTls" else "x"
    issues = _issues(tmp_path, doc)
    extra = [i for i in issues if i.field.endswith(key)]
    assert extra, [str(i) for i in issues]
    assert "Extra inputs are not permitted" in extra[0].message


def test_snake_case_spellings_are_refused_like_the_schema_does(tmp_path: Path) -> None:
    """The loader and `profiles schema` agree: only the camelCase spelling is a key."""
    doc = base_doc()
    transport = doc["spec"]["transport"]
    transport["base_url"] = transport.pop("baseUrl")
    fields = [i.field for i in _issues(tmp_path, doc)]
    assert "spec.transport.base_url" in fields and "spec.transport.baseUrl" in fields


def test_typo_reports_both_the_unknown_and_the_missing_key(tmp_path: Path) -> None:
    doc = base_doc()
    doc["spec"]["pagnation"] = doc["spec"].pop("pagination")
    fields = [i.field for i in _issues(tmp_path, doc)]
    assert "spec.pagnation" in fields
    assert "spec.pagination" in fields


@pytest.mark.parametrize("text", [
    "a: 1\nb: 2\na: 3\n",
    "spec:\n  pagination: {mode: cursor}\n  pagination: {mode: none}\n",
    "spec: {x: 1, x: 2}\n",
])
def test_duplicate_yaml_keys_rejected(tmp_path: Path, text: str) -> None:
    issues = _issues(tmp_path, text)
    assert len(issues) == 1
    assert issues[0].field == "<yaml>"
    assert "duplicate key" in issues[0].message
    assert "line" in issues[0].message


def test_duplicate_key_in_a_real_profile_file(tmp_path: Path) -> None:
    text = (PROFILES / "sales" / "sales-events.yaml").read_text(encoding="utf-8")
    text = text.replace("  rateLimit: {maxRequestsPerMinute: 600}\n",
                        "  rateLimit: {maxRequestsPerMinute: 600}\n"
                        "  rateLimit: {maxRequestsPerMinute: 6000}\n")
    issues = _issues(tmp_path, text)
    assert [i.field for i in issues] == ["<yaml>"]
    assert "'rateLimit'" in issues[0].message


def test_yaml_timestamps_stay_strings() -> None:
    doc = read_yaml("start: 2026-01-01T00:00:00Z\n")
    assert doc == {"start": "2026-01-01T00:00:00Z"}


def test_non_mapping_and_syntax_errors(tmp_path: Path) -> None:
    write_profile(tmp_path, "- just\n- a list\n", "list.yaml")
    write_profile(tmp_path, "spec: [unclosed\n", "broken.yaml")
    issues = ProfileCatalog.load(tmp_path).issues
    assert [(i.path, i.field) for i in issues] == [("broken.yaml", "<yaml>"),
                                                   ("list.yaml", "<document>")]


# -- inline credentials -------------------------------------------------------------------------

SECRET = "abc123def456ghi789"
CREDENTIALS: list[tuple[str, Mutation, str]] = [
    ("api_key param", _in("request", params={"api_key": SECRET}), "spec.request.params.api_key"),
    ("Authorization header", _in("request", headers={"Authorization": f"Bearer {SECRET}"}),
     "spec.request.headers.Authorization"),
    ("x-api-key header", _in("request", headers={"X-API-Key": SECRET}),
     "spec.request.headers.X-API-Key"),
    ("bearer value in another header", _in("request", headers={"X-Custom": f"Bearer {SECRET}"}),
     "spec.request.headers.X-Custom"),
    ("access token header", _in("request", headers={"X-Access-Token": SECRET}),
     "spec.request.headers.X-Access-Token"),
    ("private token header", _in("request", headers={"Private-Token": SECRET}),
     "spec.request.headers.Private-Token"),
    ("password in auth", lambda d: d["spec"]["auth"].update(password=SECRET),
     "spec.auth.password"),
    ("token in secretRef's place", lambda d: d["spec"]["auth"].update(token=SECRET),
     "spec.auth.token"),
    ("github token in description",
     lambda d: d["metadata"].update(description="ghp_" + "A1b2C3d4" * 5),
     "metadata.description"),
    ("jwt as a param", _in("request", params={"q": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.x"}),
     "spec.request.params.q"),
    ("aws key in a label", lambda d: d["metadata"].update(labels={"k": "AKIAABCDEFGHIJKLMNOP"}),
     "metadata.labels.k"),
    ("userinfo in baseUrl",
     _in("transport", baseUrl=f"https://user:{SECRET}@api.widgets.example.invalid"),
     "spec.transport.baseUrl"),
    ("credential query in baseUrl",
     _in("transport", baseUrl=f"https://api.widgets.example.invalid/?token={SECRET}"),
     "spec.transport.baseUrl"),
    ("token in a variant", lambda d: d["variants"]["dev"]["spec"].update(
        request={"params": {"access_token": SECRET}}),
     "variants.dev.spec.request.params.access_token"),
    ("numeric secret", _in("request", params={"password": 12345678}),
     "spec.request.params.password"),
]


@pytest.mark.parametrize(("label", "mutate", "field"), CREDENTIALS,
                         ids=[c[0] for c in CREDENTIALS])
def test_inline_credentials_rejected_without_echo(tmp_path: Path, label: str, mutate: Mutation,
                                                  field: str) -> None:
    doc = base_doc()
    mutate(doc)
    issues = _issues(tmp_path, doc)
    assert field in [i.field for i in issues], [str(i) for i in issues]
    for issue in issues:
        assert SECRET not in str(issue)
        assert "12345678" not in str(issue)
        assert "AKIAABCDEFGHIJKLMNOP" not in str(issue)
        assert "A1b2C3d4" not in str(issue)
        assert "eyJhbGci" not in str(issue)


def test_secret_refs_and_parameter_names_are_not_credentials(tmp_path: Path) -> None:
    doc = base_doc()
    doc["spec"]["auth"] = {"mode": "apiKeyQuery", "queryParam": "api_key",
                           "secretRef": {"name": "widgets-api", "key": "token"}}
    doc["spec"]["request"]["params"] = {"format": "json"}
    doc["spec"]["request"]["headers"] = {"Accept": "application/json", "X-Client": "chartly"}
    assert _issues(tmp_path, doc) == []


# -- variants -----------------------------------------------------------------------------------

def _catalog(tmp_path: Path, doc: dict[str, Any]) -> ProfileCatalog:
    write_profile(tmp_path, doc)
    catalog = ProfileCatalog.load(tmp_path)
    assert catalog.issues == []
    return catalog


def test_variant_overlay_merges_deletes_and_replaces(tmp_path: Path) -> None:
    doc = base_doc()
    doc["spec"]["request"]["params"] = {"a": "1", "b": "2"}
    doc["variants"]["eu"] = {
        "metadata": {"description": "eu", "labels": {"region": "eu"}},
        "spec": {
            "transport": {"timeoutMs": 2000},                     # object merge
            "request": {"params": {"a": None, "c": "3"}},         # null deletes, merge
            "egressPolicy": {"dnsAllowlist": ["*.widgets.example.invalid"]},  # list replaces
            "envs": ["prod"],
        },
    }
    catalog = _catalog(tmp_path, doc)
    base = catalog.resolve(parse_ref(REF))
    eu = catalog.resolve(parse_ref(REF + "#eu"))
    assert eu.spec.transport.base_url == base.spec.transport.base_url
    assert eu.spec.transport.timeout_ms == 2000
    assert base.spec.transport.timeout_ms == 10_000
    assert eu.spec.request.params == {"b": "2", "c": "3"}
    assert base.spec.request.params == {"a": "1", "b": "2"}
    assert eu.spec.egress_policy.dns_allowlist == ["*.widgets.example.invalid"]
    assert eu.spec.envs == ["prod"]
    assert eu.profile.metadata.description == "eu"
    assert eu.profile.metadata.labels == {"region": "eu"}
    assert eu.profile.metadata.namespace == base.profile.metadata.namespace
    assert "variants" not in eu.document


def test_variant_that_breaks_the_schema_is_reported(tmp_path: Path) -> None:
    doc = base_doc()
    doc["variants"]["broken"] = {"spec": {"pagination": {"mode": "bogus"}}}
    doc["variants"]["gone"] = {"spec": {"rateLimit": None}}
    issues = _issues(tmp_path, doc)
    fields = [i.field for i in issues]
    assert "variants.broken: spec.pagination.mode" in fields
    assert "variants.gone: spec.rateLimit" in fields
    assert not any(f.startswith("variants.dev") for f in fields)


def test_variant_overlay_cannot_add_unknown_keys(tmp_path: Path) -> None:
    doc = base_doc()
    doc["variants"]["dev"]["spec"]["transport"]["verifyTls"] = False
    fields = [i.field for i in _issues(tmp_path, doc)]
    assert "variants.dev: spec.transport.verifyTls" in fields


def test_resolved_hash_differs_per_variant_and_is_stable(tmp_path: Path) -> None:
    first = _catalog(tmp_path, base_doc())
    second = ProfileCatalog.load(tmp_path)
    base, dev = first.resolve(parse_ref(REF)), first.resolve(parse_ref(REF + "#dev"))
    assert base.hash != dev.hash
    assert base.hash.startswith("sha256:") and len(base.hash) == 71
    assert second.resolve(parse_ref(REF)).hash == base.hash
    assert second.resolve(parse_ref(REF + "#dev")).hash == dev.hash
    # A change that does not matter semantically (YAML key order, comments) keeps the hash.
    doc = base_doc()
    doc["spec"] = dict(reversed(list(doc["spec"].items())))
    write_profile(tmp_path, "# a comment\n" + json.dumps(doc))
    assert ProfileCatalog.load(tmp_path).resolve(parse_ref(REF)).hash == base.hash
    # A change that does matter changes it.
    doc["spec"]["rateLimit"]["maxRequestsPerMinute"] = 61
    write_profile(tmp_path, doc)
    assert ProfileCatalog.load(tmp_path).resolve(parse_ref(REF)).hash != base.hash


def test_resolved_profile_is_frozen(tmp_path: Path) -> None:
    resolved = _catalog(tmp_path, base_doc()).resolve(parse_ref(REF + "#dev"))
    with pytest.raises(ValidationError):
        resolved.profile.spec.transport.base_url = "https://evil.example"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        resolved.spec.pagination.mode = "none"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        resolved.profile.metadata = resolved.profile.metadata  # type: ignore[misc]
    with pytest.raises(AttributeError):
        resolved.hash = "sha256:0"  # type: ignore[misc]


# -- JSON Schema --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = profile_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


SHIPPED = sorted(PROFILES.rglob("*.yaml"))


def test_there_are_shipped_profiles() -> None:
    assert len(SHIPPED) >= 6


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_schema_accepts_every_shipped_profile(validator: Any, path: Path) -> None:
    doc = read_yaml(path.read_text(encoding="utf-8"))
    errors = sorted(validator.iter_errors(doc), key=str)
    assert errors == []
    ConnectorProfile.model_validate(doc)


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda d: d["spec"].update(pagnation=d["spec"].pop("pagination")), "pagnation"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["spec"]["transport"].update(verifyTls=False), "verifyTls"),
])
def test_schema_rejects_unknown_keys(validator: Any, mutate: Mutation, key: str) -> None:
    doc = copy.deepcopy(read_yaml((PROFILES / "sales" / "sales-events.yaml").read_text()))
    mutate(doc)
    errors = list(validator.iter_errors(doc))
    assert errors
    assert any(key in e.message for e in errors)


def test_schema_rejects_a_bad_enum(validator: Any) -> None:
    doc = base_doc()
    doc["spec"]["pagination"]["mode"] = "bogus"
    assert list(validator.iter_errors(doc))
    assert not list(validator.iter_errors(base_doc()))


@pytest.mark.parametrize(("section", "key", "value"), [
    ("pagination", "pageSize", True), ("pagination", "pageSize", "500"),
    ("transport", "timeoutMs", False)])
def test_a_bool_or_text_is_not_an_int_through_the_cli(tmp_path: Path, capsys: Any,
                                                      section: str, key: str,
                                                      value: Any) -> None:
    doc = base_doc()
    doc["spec"][section][key] = value
    write_profile(tmp_path, doc)
    code, out, _ = run_cli(capsys, *plan_args(REF, tenant="tenant-test", project="proj-test",
                                              profiles=tmp_path))
    assert code == 4
    error = json.loads(out)["error"]
    assert error["errors"][0]["field"] == f"spec.{section}.{key}"
    assert "valid integer" in error["errors"][0]["message"]

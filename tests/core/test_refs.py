"""Profile ref grammar: `tenant/project::connector/name@version[#variant]`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chartly_dagster.core.errors import ExitCode, RefSyntaxError
from chartly_dagster.core.refs import ProfileRef, format_ref, parse_ref

VALID = [
    ("tenant-demo/proj-sales::connector/sales-events@1.0.0",
     ProfileRef("tenant-demo", "proj-sales", "sales-events", "1.0.0")),
    ("tenant-demo/proj-sales::connector/sales-events@1.0.0#dev",
     ProfileRef("tenant-demo", "proj-sales", "sales-events", "1.0.0", "dev")),
    ("a/b::connector/c@0.0.0", ProfileRef("a", "b", "c", "0.0.0")),
    ("t1/p2::connector/my.name_v2@10.20.30", ProfileRef("t1", "p2", "my.name_v2", "10.20.30")),
    ("t/p::connector/x@1.0.0-rc.1+build.5", ProfileRef("t", "p", "x", "1.0.0-rc.1+build.5")),
    ("t/p::connector/x@1.0.0-alpha#prod-eu", ProfileRef("t", "p", "x", "1.0.0-alpha", "prod-eu")),
    ("0/9::connector/1@1.2.3#0", ProfileRef("0", "9", "1", "1.2.3", "0")),
]

INVALID = [
    # (ref, field)
    ("tenant-demo/proj-sales/connector/x@1.0.0", "namespace"),   # missing '::'
    ("", "namespace"),                                          # empty
    ("t/p::connector/x@1.0.0::y", "namespace"),                 # two '::'
    ("tenant::connector/x@1.0.0", "namespace"),                 # namespace without '/'
    ("a/b/c::connector/x@1.0.0", "namespace"),                  # namespace with two '/'
    ("tenant_demo/proj::connector/x@1.0.0", "tenant"),          # '_' in tenant
    ("Tenant/proj::connector/x@1.0.0", "tenant"),               # uppercase tenant
    ("-tenant/proj::connector/x@1.0.0", "tenant"),              # leading '-'
    ("tenant-/proj::connector/x@1.0.0", "tenant"),              # trailing '-'
    ("/proj::connector/x@1.0.0", "tenant"),                     # empty tenant
    ("t" * 64 + "/p::connector/x@1.0.0", "tenant"),             # 64 characters
    ("tenant/Proj::connector/x@1.0.0", "project"),              # uppercase project
    ("tenant/::connector/x@1.0.0", "project"),                  # empty project
    ("tenant/pr.oj::connector/x@1.0.0", "project"),             # '.' in project
    ("t/p::source/x@1.0.0", "kind"),                            # wrong kind
    ("t/p::x@1.0.0", "kind"),                                   # no kind
    ("t/p::Connector/x@1.0.0", "kind"),                         # uppercase kind
    ("t/p::connector/x", "version"),                            # missing version
    ("t/p::connector/x@", "version"),                           # empty version
    ("t/p::connector/x@1.0", "version"),                        # not semver
    ("t/p::connector/x@v1.0.0", "version"),                     # 'v' prefix
    ("t/p::connector/x@01.0.0", "version"),                     # leading zero
    ("t/p::connector/x@1.0.0-", "version"),                     # empty prerelease
    ("t/p::connector/x@1.0.0+", "version"),                     # empty build
    ("t/p::connector/x@1.0.0-01", "version"),                   # numeric prerelease with 0
    ("t/p::connector/x@1.0.0@2.0.0", "version"),                # extra '@'
    ("t/p::connector/X@1.0.0", "name"),                         # uppercase name
    ("t/p::connector/@1.0.0", "name"),                          # empty name
    ("t/p::connector/x-@1.0.0", "name"),                        # trailing '-'
    ("t/p::connector/x@1.0.0#", "variant"),                     # empty variant
    ("t/p::connector/x@1.0.0#Dev", "variant"),                  # uppercase variant
    ("t/p::connector/x@1.0.0#dev#2", "variant"),                # two '#'
    ("t/p::connector/x@1.0.0#d_v", "variant"),                  # '_' in variant
    (" t/p::connector/x@1.0.0", "ref"),                         # leading space
    ("t/p::connector/x@1.0.0 ", "ref"),                         # trailing space
    ("t/p::connector/my x@1.0.0", "ref"),                       # inner space
    ("t/p::connector/x@1.0.0\n", "ref"),                        # newline
    ("t/p::connector/x@1.0.0\t#dev", "ref"),                    # tab
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_refs_parse(text: str, expected: ProfileRef) -> None:
    ref = parse_ref(text)
    assert ref == expected
    assert format_ref(ref) == text
    assert str(ref) == text


@pytest.mark.parametrize(("text", "field"), INVALID)
def test_invalid_refs_name_the_part(text: str, field: str) -> None:
    with pytest.raises(RefSyntaxError) as info:
        parse_ref(text)
    assert info.value.field == field
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.code == "invalid_ref"


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 25
    assert len({text for text, _ in INVALID}) == len(INVALID)


def test_non_string_ref_is_a_usage_error() -> None:
    with pytest.raises(RefSyntaxError) as info:
        parse_ref(None)  # type: ignore[arg-type]
    assert info.value.field == "ref"


def test_ref_helpers() -> None:
    ref = parse_ref("t/p::connector/x@1.0.0#dev")
    assert ref.namespace == "t/p"
    assert ref.base() == parse_ref("t/p::connector/x@1.0.0")
    assert ref.base().with_variant("dev") == ref
    assert ref.base().variant is None
    with pytest.raises(AttributeError):
        ref.tenant = "other"  # type: ignore[misc]


# -- round trips -------------------------------------------------------------------------------

segments = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z", fullmatch=True)
names = st.from_regex(r"\A[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z", fullmatch=True)
numbers = st.integers(min_value=0, max_value=10**6).map(str)
identifiers = st.one_of(numbers, st.from_regex(r"\A[0-9]*[a-zA-Z-][0-9a-zA-Z-]{0,8}\Z",
                                               fullmatch=True))
prereleases = st.lists(identifiers, min_size=1, max_size=3).map(".".join)
builds = st.lists(st.from_regex(r"\A[0-9a-zA-Z-]{1,8}\Z", fullmatch=True), min_size=1,
                  max_size=3).map(".".join)


@st.composite
def versions(draw: st.DrawFn) -> str:
    text = ".".join(draw(numbers) for _ in range(3))
    if draw(st.booleans()):
        text += "-" + draw(prereleases)
    if draw(st.booleans()):
        text += "+" + draw(builds)
    return text


refs = st.builds(ProfileRef, segments, segments, names, versions(),
                 st.one_of(st.none(), segments))


@given(refs)
def test_parse_format_round_trip(ref: ProfileRef) -> None:
    text = format_ref(ref)
    assert parse_ref(text) == ref
    assert format_ref(parse_ref(text)) == text


@given(refs, st.sampled_from(["::", "@", "#", " ", "/"]))
def test_inserting_a_separator_into_the_name_is_refused(ref: ProfileRef, junk: str) -> None:
    bad = ProfileRef(ref.tenant, ref.project, ref.name + junk + "x", ref.version, ref.variant)
    with pytest.raises(RefSyntaxError):
        parse_ref(format_ref(bad))

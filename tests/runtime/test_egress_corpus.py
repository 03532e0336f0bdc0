"""A table of hostile inputs: each is refused with a stable reason before any connection.

Refusals are asserted on the seams: the injected resolver records every lookup and a
recorder below the guard records every socket; no test here opens a socket.
"""

from __future__ import annotations

import ipaddress
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chartly_dagster.core.errors import ExitCode
from chartly_dagster.core.profile import ConnectorProfile
from chartly_dagster.runtime.egress import EnvPolicy, classify_address
from chartly_dagster.runtime.errors import EgressRefused, Reason
from chartly_dagster.runtime.http import build_client
from tests.support.egress import API_HOST, FakeResolver, make_profile, record_connects

BASE = f"https://{API_HOST}"

URL_CASES = [
    # schemes
    ("ftp://api.example.test/", Reason.SCHEME_NOT_ALLOWED),
    ("file:///etc/passwd", Reason.SCHEME_NOT_ALLOWED),
    ("gopher://api.example.test:443/_GET", Reason.SCHEME_NOT_ALLOWED),
    ("javascript:alert(1)", Reason.SCHEME_NOT_ALLOWED),
    ("data:text/plain,hi", Reason.SCHEME_NOT_ALLOWED),
    ("ws://api.example.test/", Reason.SCHEME_NOT_ALLOWED),
    ("dict://api.example.test:443/", Reason.SCHEME_NOT_ALLOWED),
    ("/relative/path", Reason.INVALID_URL),
    ("https:///path", Reason.INVALID_URL),
    ("https:/\\evil.test/", Reason.INVALID_URL),
    # userinfo, including the classic parser-confusion spellings
    ("https://user:pass@api.example.test/", Reason.USERINFO_IN_URL),
    ("https://user@api.example.test/", Reason.USERINFO_IN_URL),
    ("https://api.example.test@evil.test/", Reason.USERINFO_IN_URL),
    ("https://api.example.test\\@evil.test/", Reason.USERINFO_IN_URL),
    ("https://api.example.test:443@evil.test/", Reason.USERINFO_IN_URL),
    # names outside the allowlist
    ("https://evil.test/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://api.example.test.evil.test/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://evilapi.example.test/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://cdn.example.test/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://x.cdn.example.test.evil.test/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://xn--pple-43d.com/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://api.example.tést/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://localhost/", Reason.HOST_NOT_ALLOWLISTED),
    ("https://metadata.google.internal/computeMetadata/v1/", Reason.HOST_NOT_ALLOWLISTED),
    # malformed names
    ("https://ap%69.example.test/", Reason.INVALID_HOST),
    ("https://api.example.test%2eevil.test/", Reason.INVALID_HOST),
    ("https://api.example.test%00.evil.test/", Reason.INVALID_HOST),
    ("https://*.cdn.example.test/", Reason.INVALID_HOST),
    ("https://-api.example.test/", Reason.INVALID_HOST),
    ("https://\uff41\uff50\uff49.example.test/", Reason.INVALID_URL),  # fullwidth "api"
    ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", Reason.INVALID_URL),  # fullwidth
    # numeric forms that inet_aton turns into 127.0.0.1 and friends
    ("https://2130706433/", Reason.NUMERIC_HOST),
    ("https://0x7f000001/", Reason.NUMERIC_HOST),
    ("https://0x7f.1/", Reason.NUMERIC_HOST),
    ("https://0x7f.0x0.0x0.0x1/", Reason.NUMERIC_HOST),
    ("https://127.1/", Reason.NUMERIC_HOST),
    ("https://017700000001/", Reason.NUMERIC_HOST),
    ("https://0/", Reason.NUMERIC_HOST),
    ("https://1.2.3.4.5/", Reason.NUMERIC_HOST),
    ("https://0177.0.0.1/", Reason.INVALID_URL),
    # IP literals never match a DNS allowlist
    ("https://127.0.0.1/", Reason.IP_LITERAL_HOST),
    ("https://169.254.169.254/latest/meta-data/", Reason.IP_LITERAL_HOST),
    ("https://[::1]/", Reason.IP_LITERAL_HOST),
    ("https://[0000::1]/", Reason.IP_LITERAL_HOST),
    ("https://[::ffff:127.0.0.1]/", Reason.IP_LITERAL_HOST),
    ("https://[::ffff:7f00:1]/", Reason.IP_LITERAL_HOST),
    ("https://[fe80::1%25eth0]/", Reason.IP_LITERAL_HOST),
    ("https://[fd00:ec2::254]/", Reason.IP_LITERAL_HOST),
    # ports
    ("https://api.example.test:8080/", Reason.PORT_NOT_ALLOWED),
    ("https://api.example.test:22/", Reason.PORT_NOT_ALLOWED),
    ("https://api.example.test:0/", Reason.INVALID_URL),
    ("https://api.example.test:65536/", Reason.INVALID_URL),
    ("http://api.example.test/", Reason.PORT_NOT_ALLOWED),
]

ADDRESS_CASES = [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "cgnat"),
    ("100.100.100.200", "metadata"), ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"), ("192.0.0.192", "metadata"),
    ("169.254.1.1", "link_local"), ("192.0.0.8", "ietf_protocol"),
    ("192.0.2.1", "documentation"), ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"), ("198.18.0.1", "benchmarking"),
    ("192.88.99.1", "reserved"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("::1", "loopback"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "ipv4_mapped"), ("::ffff:7f00:1", "ipv4_mapped"),
    ("::ffff:8.8.8.8", "ipv4_mapped"), ("::127.0.0.1", "ipv4_compatible"),
    ("::ffff:0:a9fe:a9fe", "ipv4_translated"), ("64:ff9b::a9fe:a9fe", "nat64"),
    ("64:ff9b:1::1", "nat64"), ("2002:7f00:1::1", "6to4"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link_local"), ("fec0::1", "site_local"), ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"), ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"), ("2001:10::1", "ietf_protocol"),
    ("100::1", "reserved"), ("5f00::1", "reserved"), ("4000::1", "reserved"),
]


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver({API_HOST: ["93.184.216.34"]})


@pytest.fixture
def client(resolver: FakeResolver):
    resolved = make_profile(BASE, allowlist=(API_HOST, "*.cdn.example.test"), ports=(443, 8443))
    with build_client(resolved, env="dev", resolver=resolver) as guarded:
        yield guarded


@pytest.mark.parametrize(("url", "reason"), URL_CASES)
def test_hostile_url_is_refused_before_any_lookup(client, resolver, url, reason) -> None:
    recorder = record_connects(client)
    with pytest.raises(EgressRefused) as info:
        client.get(url)
    assert info.value.reason == reason
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED
    assert resolver.calls == [] and recorder.connects == []


@pytest.mark.parametrize(("address", "category"), ADDRESS_CASES)
def test_hostile_answer_is_refused_before_connecting(resolver, address, category) -> None:
    resolver.answers[API_HOST] = [address]
    with build_client(make_profile(BASE), env="dev", resolver=resolver) as client:
        recorder = record_connects(client)
        with pytest.raises(EgressRefused) as info:
            client.get(f"{BASE}/events")
    assert (info.value.reason, info.value.category) == (Reason.ADDRESS_REFUSED, category)
    assert resolver.calls == [(API_HOST, 443)] and recorder.connects == []


def test_one_bad_answer_among_good_ones_refuses_the_lookup(resolver) -> None:
    resolver.answers[API_HOST] = ["93.184.216.34", "2606:4700::1111", "169.254.169.254"]
    with build_client(make_profile(BASE), env="dev", resolver=resolver) as client:
        recorder = record_connects(client)
        with pytest.raises(EgressRefused, match="metadata"):
            client.get(f"{BASE}/")
    assert recorder.connects == []


def test_metadata_and_embedded_forms_stay_refused_even_when_their_range_is_allowed() -> None:
    allowed = [ipaddress.ip_network(c) for c in ("169.254.0.0/16", "127.0.0.0/8", "fc00::/7")]
    for text in ("169.254.169.254", "fd00:ec2::254", "::ffff:127.0.0.1", "::127.0.0.1"):
        assert classify_address(ipaddress.ip_address(text), allowed) is not None
    assert classify_address(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert classify_address(ipaddress.ip_address("fd12::1"), allowed) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                     "1.1.1.1", "2a00:1450:4001:80b::200e"])
def test_public_addresses_pass_the_tables(address) -> None:
    assert classify_address(ipaddress.ip_address(address)) is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_address_embedded_in_ipv6_is_refused(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    for v6 in (ipaddress.IPv6Address(f"::ffff:{v4}"), ipaddress.IPv6Address(f"64:ff9b::{v4}"),
               ipaddress.IPv6Address((0x2002 << 112) | (value << 80))):
        assert classify_address(v6, [ipaddress.ip_network("::/0")]) is not None


@given(st.integers(min_value=0, max_value=2**24 - 1))
def test_all_of_127_8_is_loopback(value: int) -> None:
    assert classify_address(ipaddress.IPv4Address((127 << 24) | value)) == "loopback"


HEADER_CASES = [
    {"Host": "evil.test"}, {"host": API_HOST}, {"Authorization": "Bearer x"},
    {"Proxy-Authorization": "Basic eA=="}, {"Cookie": "a=b"}, {"X-Forwarded-For": "1.2.3.4"},
    {"Accept-Encoding": "br"}, {"Proxy-Foo": "1"}, {"X-Ok": "a\r\nHost: evil.test"},
    {"Transfer-Encoding": "chunked"},
]


@pytest.mark.parametrize("headers", HEADER_CASES)
def test_caller_cannot_set_routing_or_credential_headers(client, resolver, headers) -> None:
    with pytest.raises(EgressRefused) as info:
        client.get(f"{BASE}/events", headers=headers)
    assert info.value.reason == Reason.HEADER_NOT_ALLOWED
    assert resolver.calls == []


def test_tls_verification_cannot_be_turned_off(resolver) -> None:
    resolved = make_profile(BASE)
    no_check = ssl.create_default_context()
    no_check.check_hostname = False
    no_check.verify_mode = ssl.CERT_NONE
    for verify in (False, no_check):
        with pytest.raises(EgressRefused) as info:
            build_client(resolved, env="dev", resolver=resolver, verify=verify)  # type: ignore[arg-type]
        assert info.value.reason == Reason.TLS_VERIFICATION_REQUIRED


@pytest.mark.parametrize(("env", "cidr"), [
    ("prod", "127.0.0.0/8"), ("staging", "::1/128"), ("prod", "169.254.0.0/16"),
    ("dev", "0.0.0.0/0"), ("dev", "169.254.169.254/32"), ("prod", "100.64.0.0/10"),
    ("qa", "10.0.0.0/8"),
])
def test_env_policy_limits_which_cidrs_a_profile_may_open(resolver, env, cidr) -> None:
    with pytest.raises(EgressRefused) as info:
        build_client(make_profile(BASE, cidrs=[cidr]), env=env, resolver=resolver)
    assert info.value.reason == Reason.CIDR_NOT_PERMITTED
    assert resolver.calls == []


def test_private_ranges_may_be_opened_outside_dev(resolver) -> None:
    for env in ("staging", "prod"):
        build_client(make_profile(BASE, cidrs=["10.20.0.0/16", "fd00::/8"]), env=env,
                     resolver=resolver).close()


def test_plain_http_is_refused_outside_dev(resolver) -> None:
    with pytest.raises(EgressRefused) as info:
        build_client(make_profile(f"http://{API_HOST}"), env="prod", resolver=resolver)
    assert info.value.reason == Reason.INSECURE_SCHEME
    custom = EnvPolicy(plaintext_http_envs=frozenset({"dev", "prod"}))
    build_client(make_profile(f"http://{API_HOST}"), env="prod", resolver=resolver,
                 env_policy=custom).close()


@pytest.mark.parametrize("pattern", ["*.co.uk", "*.github.io", "*.s3.amazonaws.com",
                                     "*.com", "*", "*.appspot.com", "api.*.example.test",
                                     "127.0.0.1", "::1"])
def test_allowlist_patterns_refused_at_profile_load(pattern) -> None:
    with pytest.raises(ValueError, match=r"dnsAllowlist|wildcard|IP address"):
        make_profile(BASE, allowlist=(API_HOST, pattern))


def test_allowlist_wildcards_under_a_registered_domain_load() -> None:
    resolved = make_profile(BASE, allowlist=(API_HOST, "*.Example.TEST.", "*.foo.github.io"))
    assert resolved.spec.egress_policy.dns_allowlist == [
        "*.example.test", "*.foo.github.io", API_HOST]


def test_case_and_trailing_dot_do_not_change_the_answer(client, resolver) -> None:
    recorder = record_connects(client)
    resolver.answers[API_HOST] = ["169.254.169.254"]
    with pytest.raises(EgressRefused) as info:
        client.get("https://API.Example.TEST./events")
    assert info.value.category == "metadata"
    assert resolver.calls == [(API_HOST, 443)] and recorder.connects == []


def test_unix_sockets_are_refused(client) -> None:
    with pytest.raises(EgressRefused) as info:
        client.backend.connect_unix_socket("/var/run/docker.sock")
    assert info.value.reason == Reason.UNIX_SOCKET_REFUSED


def test_corpus_is_large_enough() -> None:
    total = len(URL_CASES) + len(ADDRESS_CASES) + len(HEADER_CASES)
    assert total >= 60


def test_profile_model_rejects_ip_literal_base_url() -> None:
    doc = make_profile(BASE).document
    doc["spec"]["transport"]["baseUrl"] = "https://127.0.0.1"
    with pytest.raises(ValueError, match="IP address"):
        ConnectorProfile.model_validate(doc)

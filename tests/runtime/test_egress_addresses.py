"""Internal APIs by address, and refusals that say how to open what they refuse.

A `baseUrl` may be an IP literal in its one canonical form when the profile's
`allowedCidrs` (as the env permits) hold it; every other numeric spelling and every
address outside the allowed CIDRs stays refused (tests/runtime/test_egress_corpus.py keeps the
hostile table). Refusals of private or loopback addresses name the `allowedCidrs` entry
that would let them through and the envs that may allow it.
"""

from __future__ import annotations

import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chartly_dagster.core.errors import ChartlyError, ExitCode
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.profile import ConnectorProfile
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.egress import EnvPolicy
from chartly_dagster.runtime.errors import EgressRefused, Reason
from chartly_dagster.runtime.executor import NetworkOptions, Seams, WindowTarget, fetch_window
from chartly_dagster.runtime.http import build_client
from tests.support.egress import API_HOST, FakeResolver, make_profile, record_connects, reply, serve
from tests.support.live import RecordingSleep

DAY = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")
RECORDS = b'[{"id": "a", "ts": "2026-02-01T01:00:00Z"}, {"id": "b", "ts": "2026-02-01T02:00:00Z"}]'


def _ok(handler) -> None:
    reply(handler, 200, RECORDS)


@pytest.mark.usefixtures("fresh_rate_buckets")
def test_a_canonical_ip_literal_inside_the_allowed_cidrs_is_fetched_without_dns(
        tmp_path: Path) -> None:
    with serve(_ok) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        resolved = make_profile(base, cidrs=["127.0.0.0/8"])
        resolver = FakeResolver({})
        result = fetch_window(resolved, DAY, build_plan(resolved, DAY),
                              target=WindowTarget.at(str(tmp_path)),
                              network=NetworkOptions("dev"),
                              seams=Seams(resolver=resolver, sleep=RecordingSleep(),
                                          rng=random.Random(0)))
    assert result.records == 2 and result.outcome == "complete"
    assert resolver.calls == []  # an address is not looked up
    assert srv.requests[0]["headers"]["Host"] == f"127.0.0.1:{srv.port}"


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_a_canonical_ipv6_literal_is_fetched_over_ipv6_loopback() -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            reply(self, 200, RECORDS)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = _V6Server(("::1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        base = f"http://[::1]:{server.server_address[1]}"
        resolver = FakeResolver({})
        with build_client(make_profile(base, cidrs=["::1/128"]), env="dev",
                          resolver=resolver) as client:
            response = client.get(f"{base}/events")
    finally:
        server.shutdown()
        server.server_close()
    assert (response.status_code, response.content) == (200, RECORDS)
    assert resolver.calls == []


@pytest.mark.parametrize("url", [
    "http://127.1:8765/", "http://2130706433:8765/", "http://0x7f000001:8765/",
    "http://0x7f.0.0.1:8765/", "http://017700000001:8765/", "http://[0000::1]:8765/",
    "http://[::ffff:127.0.0.1]:8765/", "http://[::ffff:7f00:1]:8765/",
    "http://[0:0:0:0:0:0:0:1]:8765/", "http://[fe80::1%25eth0]:8765/",
    "http://10.1.2.3:8765/", "http://169.254.169.254:8765/",
])
def test_every_other_numeric_form_and_address_stays_refused(url: str) -> None:
    cidrs = ["127.0.0.0/8", "::1/128", "fe80::/10", "169.254.0.0/16"]
    policy = EnvPolicy(allowable_cidrs={"dev": ("0.0.0.0/0", "::/0")})
    resolver = FakeResolver({})
    with build_client(make_profile(f"http://{API_HOST}:8765", cidrs=cidrs), env="dev",
                      env_policy=policy, resolver=resolver) as client:
        recorder = record_connects(client)
        with pytest.raises(EgressRefused) as info:
            client.get(url)
    assert info.value.reason in (Reason.IP_LITERAL_HOST, Reason.NUMERIC_HOST,
                                 Reason.INVALID_URL, Reason.ADDRESS_REFUSED)
    assert resolver.calls == [] and recorder.connects == []


def test_ip_literal_base_url_loads_only_in_canonical_form_inside_its_cidrs() -> None:
    ok = make_profile("http://10.20.0.5:8080", cidrs=["10.20.0.0/16"])
    assert ok.spec.transport.host == "10.20.0.5"
    assert make_profile("http://[fd00::5]:8080", cidrs=["fd00::/8"]).spec.transport.port == 8080
    doc = ok.document
    for base, cidrs, expected in [
        ("http://10.20.0.5:8080", [], "outside egressPolicy.allowedCidrs; add 10.20.0.5/32"),
        ("http://10.20.0.5:8080", ["10.30.0.0/16"], "outside egressPolicy.allowedCidrs"),
        ("http://[0000::5]:8080", ["::/96"], "non-canonical"),
        ("http://[fe80::1%25eth0]:8080", ["fe80::/10"], "non-canonical"),
        ("http://127.1:8080", ["127.0.0.0/8"], "numeric address form"),
        ("http://0x7f000001:8080", ["127.0.0.0/8"], "numeric address form"),
    ]:
        doc["spec"]["transport"]["baseUrl"] = base
        doc["spec"]["egressPolicy"]["allowedCidrs"] = cidrs
        with pytest.raises(ValueError, match=expected):
            ConnectorProfile.model_validate(doc)


def test_the_env_still_decides_which_cidrs_an_ip_literal_profile_may_use() -> None:
    resolved = make_profile("http://127.0.0.1:8765", cidrs=["127.0.0.0/8"])
    with pytest.raises(EgressRefused) as info:
        build_client(resolved, env="prod", resolver=FakeResolver({}))
    assert info.value.reason == Reason.CIDR_NOT_PERMITTED
    assert "envs that permit it: dev" in info.value.message
    policy = EnvPolicy(allowable_cidrs={"dev": ("169.254.0.0/16",)})
    metadata = make_profile("http://169.254.169.254:8765", cidrs=["169.254.0.0/16"])
    with pytest.raises(EgressRefused) as info:  # metadata: no CIDR opens it
        build_client(metadata, env="dev", env_policy=policy,
                     resolver=FakeResolver({})).get("http://169.254.169.254:8765/")
    assert info.value.category == "metadata"


@pytest.mark.parametrize(("address", "hint"), [
    ("127.0.0.1", "egressPolicy.allowedCidrs entry 127.0.0.1/32 (or a range holding it) "
                  "would allow it in env dev"),
    ("10.1.2.3", "entry 10.1.2.3/32 (or a range holding it) would allow it in env dev, "
                 "staging, prod"),
    ("fd12::7", "entry fd12::7/128 (or a range holding it) would allow it in env dev, "
                "staging, prod"),
    ("100.64.0.9", "no env permits an egressPolicy.allowedCidrs entry such as 100.64.0.9/32"),
    ("169.254.169.254", "no egressPolicy.allowedCidrs entry can open it"),
])
def test_an_address_refusal_says_which_cidr_and_envs_would_open_it(address: str,
                                                                    hint: str) -> None:
    base = f"https://{API_HOST}"
    with build_client(make_profile(base), env="prod",
                      resolver=FakeResolver({API_HOST: [address]})) as client:
        with pytest.raises(EgressRefused) as info:
            client.get(f"{base}/events")
    error: ChartlyError = info.value
    assert hint in error.message and f"resolved to {address}" in error.message
    assert error.exit_code == ExitCode.VALIDATION_FAILED

"""One known secret through every failure path; no byte that leaves may contain it.

Collected: every log line (httpx/httpcore at DEBUG), every exception's str, repr,
to_dict and formatted traceback, and every response's URL and redirect chain.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import time
import traceback
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest

from chartly_dagster.core.errors import ChartlyError
from chartly_dagster.runtime.http import build_client
from chartly_dagster.runtime.redact import install_log_redaction
from chartly_dagster.runtime.retry import classify_response
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from tests.support.egress import API_HOST, FakeResolver, make_profile, reply, serve

SECRET = "LEAK-c0ffee-9f8e7d"
USER = "robot-user-77"
MODES = {
    "bearer": {},
    "apiKeyHeader": {"headerName": "X-Api-Token"},
    "apiKeyQuery": {"queryParam": "k"},
    "basic": {"usernameSecretRef": {"name": "api", "key": "user"}},
}


def route(handler) -> None:
    path = handler.path.split("?")[0]
    if path == "/echo-redirect":
        reply(handler, 302, b"", {"Location": f"http://evil.test/?k={SECRET}&token={SECRET}"})
    elif path == "/loop":
        reply(handler, 302, b"", {"Location": handler.path})
    elif path == "/big":
        reply(handler, 200, b"x" * 4096)
    elif path == "/slow":
        handler.send_response(200)
        handler.send_header("Content-Length", "50")
        handler.end_headers()
        for _ in range(50):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.03)
    elif path == "/cut":
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"partial")
        handler.close_connection = True
    elif path == "/bad-gzip":
        reply(handler, 200, f'{{"token": "{SECRET}"}}'.encode(), {"Content-Encoding": "gzip"})
    elif path == "/echo-400":  # an upstream that quotes the credential back in its error
        reply(handler, 400, f'{{"error": "bad key {SECRET}", "auth": "Bearer {SECRET}"}}'.encode())
    elif path == "/bad-location":
        reply(handler, 302, b"", {"Location": f"http:{SECRET}@/x"})
    else:
        reply(handler, 401, b'{"error": "bad token"}')


@pytest.mark.parametrize("mode", list(MODES))
def test_secret_never_leaves_through_any_failure_path(mode) -> None:
    secrets = SecretResolver([MappingSecretProvider({"api/token": SECRET, "api/user": USER})])
    install_log_redaction(secrets.redactor)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("httpx", "httpcore", "chartly_dagster")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    produced: list[str] = []
    try:
        with serve(route) as srv, socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead_port = closed.getsockname()[1]
            base = f"http://{API_HOST}:{srv.port}"
            auth = {"mode": mode, "secretRef": {"name": "api", "key": "token"}, **MODES[mode]}
            resolved = make_profile(base, cidrs=["127.0.0.0/8"], auth=auth,
                                    allowlist=[API_HOST, "nxdomain.example.test",
                                               "meta.example.test"],
                                    max_payload_bytes=1024, deadline_ms=300,
                                    ports=[srv.port, dead_port])
            resolver = FakeResolver({API_HOST: ["127.0.0.1"],
                                     "meta.example.test": ["169.254.169.254"]})
            attempts = [f"{base}/unauthorized", f"{base}/echo-redirect", f"{base}/loop",
                        f"{base}/big", f"{base}/slow", f"{base}/cut", f"{base}/bad-location",
                        f"{base}/bad-gzip", f"{base}/echo-400",
                        f"http://{API_HOST}:{dead_port}/refused",
                        f"{base}/caller-url?api_key={SECRET}",
                        f"http://nxdomain.example.test:{srv.port}/",
                        f"http://meta.example.test:{srv.port}/?k={SECRET}",
                        f"https://user:{SECRET}@{API_HOST}/"]
            with build_client(resolved, env="dev", secrets=secrets, resolver=resolver) as client:
                for url in attempts:
                    try:
                        response = client.get(url)
                    except (ChartlyError, httpx.HTTPError) as exc:
                        produced += [str(exc), repr(exc), *traceback.format_exception(exc)]
                        if isinstance(exc, ChartlyError):
                            produced.append(repr(exc.to_dict()))
                    else:
                        produced += [repr(response), response.url, *response.redirects]
                        error = classify_response(response, datetime.now(UTC))
                        if error is not None:  # a 4xx quotes the upstream's body, scrubbed
                            produced += [str(error), repr(error.to_dict())]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    produced.append(stream.getvalue())
    blob = "\n".join(produced)
    basic = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    for needle in (SECRET, quote(SECRET), basic):
        assert needle not in blob
    for expected in ("401", "redirect_loop", "host_not_allowlisted", "address_refused",
                     "DNS lookup", "Connection refused", "maxPayloadBytes", "deadlineMs",
                     "peer closed", "userinfo_in_url", "HTTP Request", "invalid gzip body",
                     "upstream said: {"):
        assert expected in blob
    if mode == "basic":
        assert USER not in blob

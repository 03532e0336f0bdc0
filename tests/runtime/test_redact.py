"""The redactor and log redaction: registered values, credential params, userinfo."""

from __future__ import annotations

import io
import logging

from chartly_dagster.runtime.redact import REDACTED, Redactor, install_log_redaction


def test_registered_values_and_their_encodings_are_scrubbed() -> None:
    redactor = Redactor(["p@ss word/+"])
    text = "raw p@ss word/+ quoted p%40ss%20word%2F%2B plus p%40ss+word%2F%2B"
    assert redactor.scrub(text) == f"raw {REDACTED} quoted {REDACTED} plus {REDACTED}"


def test_credential_query_params_and_userinfo_are_scrubbed_without_registration() -> None:
    redactor = Redactor(params=["sig2"])
    url = "https://u:pw@api.example.test/x?page=2&api_key=abc&Token=def&sig2=ghi#f"
    assert redactor.scrub_url(url) == (
        f"https://{REDACTED}@api.example.test/x?page=2&api_key={REDACTED}"
        f"&Token={REDACTED}&sig2={REDACTED}#f")
    assert redactor.scrub("next?cursor=abc") == "next?cursor=abc"


def test_authorization_headers_in_text_are_scrubbed() -> None:
    redactor = Redactor()
    text = "{'Authorization': 'Bearer abc.def', 'x-api-key': 'k123'} Authorization: Basic Zm9v"
    scrubbed = redactor.scrub(text)
    assert "abc.def" not in scrubbed and "k123" not in scrubbed and "Zm9v" not in scrubbed


def test_longer_values_win_over_their_prefixes() -> None:
    redactor = Redactor(["abc", "abcdef"])
    assert redactor.scrub("abcdef") == REDACTED


def test_log_records_are_scrubbed_everywhere_and_install_is_idempotent() -> None:
    redactor = Redactor()
    redactor.add("s3cret-log-value")
    install_log_redaction(redactor)
    install_log_redaction(redactor)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s %(url)s"))
    extra = {"url": "https://api.example.test/?api_key=zzz-extra"}
    for name in ("httpx", "chartly_dagster.runtime", "some.other.library"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            logger.info("GET %s", "https://api.example.test/?k=s3cret-log-value", extra=extra)
            try:
                raise ValueError("boom s3cret-log-value")
            except ValueError:
                logger.exception("failed with %r", "s3cret-log-value", extra=extra)
        finally:
            logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert not any("s3cret-log-value" in line for line in lines)
    assert sum(REDACTED in line for line in lines) >= 9
    # `extra` fields are set after the record factory runs: the filters on the named
    # loggers (and on the root's handlers) scrub them.
    assert not any("zzz-extra" in line for line in lines if line.startswith("httpx "))
    httpx_filters = logging.getLogger("httpx").filters
    assert len(httpx_filters) == len({id(f) for f in httpx_filters})

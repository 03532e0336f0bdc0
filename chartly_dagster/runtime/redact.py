"""Scrub secrets from everything that leaves the process: logs, errors, URLs, CLI output.

A value is registered once, when it is resolved; after that every scrub replaces it (and
its URL-encoded spellings). Credential query parameters and URL userinfo are scrubbed by
pattern too, because a URL can carry a credential nobody registered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from ..core.credentials import CREDENTIAL_PARAMS

__all__ = ["REDACTED", "RedactingFilter", "Redactor", "install_log_redaction"]

REDACTED = "[REDACTED]"
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]*@")
_AUTH_HEADER_RE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key)([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;}]+")


class Redactor:
    """Holds the secret values of one process (or run) and scrubs them out of text."""

    def __init__(self, values: Iterable[str] = (), params: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._params: set[str] = {p.lower() for p in CREDENTIAL_PARAMS}
        self._values_re: re.Pattern[str] | None = None
        self._params_re = self._compile_params()
        for value in values:
            self.add(value)
        for name in params:
            self.add_param(name)

    def add(self, value: str) -> None:
        """Register a secret value (and its URL-encoded forms) for scrubbing."""
        if not value:
            return
        with self._lock:
            before = len(self._values)
            self._values.update({value, quote(value, safe=""), quote_plus(value)})
            if len(self._values) != before:
                ordered = sorted(self._values, key=len, reverse=True)
                self._values_re = re.compile("|".join(re.escape(v) for v in ordered))

    def add_param(self, name: str) -> None:
        """Treat query parameter `name` as a credential (e.g. a profile's auth.queryParam)."""
        with self._lock:
            if name.lower() not in self._params:
                self._params.add(name.lower())
                self._params_re = self._compile_params()

    def _compile_params(self) -> re.Pattern[str]:
        names = "|".join(re.escape(p) for p in sorted(self._params, key=len, reverse=True))
        return re.compile(rf"(?i)(?<=[?&;])((?:{names}))=[^&#\s\"'<>]*")

    def scrub(self, text: str) -> str:
        """`text` with every registered value, credential parameter and userinfo replaced."""
        values_re, params_re = self._values_re, self._params_re
        if values_re is not None:
            text = values_re.sub(REDACTED, text)
        text = params_re.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        text = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
        return _AUTH_HEADER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)

    def found_in(self, data: bytes) -> bool:
        """Whether any registered value (or its URL-encoded forms) occurs in `data`: a
        byte search, far cheaper than decoding and scrubbing a large body."""
        with self._lock:
            values = list(self._values)
        return any(value.encode("utf-8") in data for value in values)

    def scrub_values(self, text: str) -> str:
        """`text` with the registered values replaced and nothing else: for data, where a
        credential-shaped parameter may be legitimate content (and a full scrub is slow)."""
        values_re = self._values_re
        return text if values_re is None else values_re.sub(REDACTED, text)

    def scrub_url(self, url: Any) -> str:
        """A URL (str or httpx.URL) safe for provenance and logs."""
        return self.scrub(str(url))


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Rewrites each log record in place so no handler ever sees a registered secret."""

    def __init__(self) -> None:
        super().__init__("chartly-redaction")
        self.redactors: list[Redactor] = []

    def scrub(self, text: str) -> str:
        for redactor in list(self.redactors):
            text = redactor.scrub(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log it unformatted, still scrubbed
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                record.__dict__[key] = self.scrub(value)
        return True


_FILTER = RedactingFilter()
_INSTALL_LOCK = threading.Lock()
_FACTORY_INSTALLED = False
_LOGGERS = ("", "httpx", "httpcore", "chartly", "chartly_dagster")


def install_log_redaction(redactor: Redactor) -> None:
    """Scrub `redactor`'s values from every log record; safe to call any number of times.

    The filter sits on the record factory (every record, whichever logger made it), on
    the root, httpx and httpcore loggers, and on the root's handlers.
    """
    global _FACTORY_INSTALLED
    with _INSTALL_LOCK:
        if not any(r is redactor for r in _FILTER.redactors):
            _FILTER.redactors.append(redactor)
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
        for handler in logging.getLogger().handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
        if not _FACTORY_INSTALLED:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _FILTER.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _FACTORY_INSTALLED = True

"""Metrics and audit events (docs/contract.md#telemetry) as structured log records
(redaction applies to them).

Records carry a JSON message and the same fields in `record.chartly`, so a log shipper
can index them without parsing text.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

_audit = logging.getLogger("chartly.audit")
_metrics = logging.getLogger("chartly.metrics")


def _emit(logger: logging.Logger, fields: dict[str, Any]) -> None:
    text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str).decode()
    logger.info(text, extra={"chartly": fields})


def audit(event: str, **fields: Any) -> None:
    """One audit event (`connector.run.started`, `connector.profile.resolved`, ...)."""
    _emit(_audit, {"event": event, **fields})


def metrics(ref: str, *, requests: int, failed: int, bytes: int, pages: int, retries: int,
            seconds: float) -> None:
    """The contract's counters for one window, emitted once when it ends."""
    _emit(_metrics, {"event": "connector.metrics", "ref": ref, "requests_total": requests,
                     "requests_failed_total": failed, "bytes_ingested_total": bytes,
                     "pages_processed_total": pages, "retries_total": retries,
                     "duration_seconds": round(seconds, 6)})

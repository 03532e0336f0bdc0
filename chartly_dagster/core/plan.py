"""Build the request plan for one resolved profile and one explicit window. Pure and offline.

The plan is what the runtime executes and what golden files pin: same profile, window and
limits give the same bytes and the same plan hash in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .canonical import hash_value
from .catalog import ResolvedProfile
from .errors import UsageError
from .profile import ConnectorSpec, LimitsSpec
from .refs import format_ref
from .windows import Window, count_slices, window_params


@dataclass(frozen=True)
class Limits:
    """Caps requested on the command line or by a caller; None means "the profile's cap"."""

    max_pages: int | None = None
    max_records: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_pages", "max_records", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive integer, got {value}", field=flag)

    def applied(self, caps: LimitsSpec) -> dict[str, int]:
        """Requested limits never raise the profile's caps, only lower them."""
        def pick(requested: int | None, cap: int) -> int:
            return cap if requested is None else min(requested, cap)

        return {"max_pages": pick(self.max_pages, caps.max_pages),
                "max_records": pick(self.max_records, caps.max_records),
                "max_bytes": pick(self.max_bytes, caps.max_bytes)}


@dataclass(frozen=True)
class Plan:
    """A built plan: its JSON body (the `plan` section) and the findings found while planning."""

    body: dict[str, Any]
    findings: tuple[dict[str, str], ...]

    @property
    def plan_hash(self) -> str:
        return self.body["plan_hash"]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.body["steps"]

    @property
    def limits(self) -> dict[str, int]:
        return self.body["limits"]


def header_names(spec: ConnectorSpec) -> list[str]:
    """Every header name a request carries (values are never part of a plan)."""
    credential = spec.auth.credential_header()
    names = {"Accept", *spec.request.headers, *([credential] if credential else [])}
    return sorted(names, key=str.lower)


def _static_params(spec: ConnectorSpec) -> dict[str, str]:
    params = {k: _param_text(v) for k, v in spec.request.params.items()}
    credential = spec.auth.credential_param()
    if credential:
        params[credential] = f"<{spec.auth.secret_refs()[0]}>"
    return params


def _param_text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _step(index: int, spec: ConnectorSpec, url: str, params: dict[str, str],
          window: Window) -> dict[str, Any]:
    return {"index": index, "method": spec.request.method, "url": url,
            "params": dict(sorted(params.items())), "window": window.to_dict()}


def _continuation(spec: ConnectorSpec) -> dict[str, Any]:
    pg = spec.pagination
    return {"source": pg.continuation_source, "on_violation": pg.on_violation,
            **({"error_field": pg.error_field} if pg.error_field else {}),
            **pg.continuation_rule()}


def build_plan(resolved: ResolvedProfile, window: Window, limits: Limits | None = None) -> Plan:
    """The request plan (`plan` section of the output contract) with its hash."""
    spec = resolved.spec
    limits = limits or Limits()
    applied = limits.applied(spec.limits)
    url = spec.transport.base_url + spec.request.path
    base = {**_static_params(spec), **spec.pagination.first_request_params()}
    findings: list[dict[str, str]] = []
    slice_seconds = spec.pagination.slice_length()
    if slice_seconds:
        total = count_slices(window, slice_seconds)
        if total > applied["max_pages"]:
            findings.append({"code": "validation_failed", "path": "plan.steps",
                             "message": f"time-window needs {total} slices but max_pages is "
                                        f"{applied['max_pages']}"})
        slices = window.slices(slice_seconds)[: applied["max_pages"]]
        steps = [_step(i, spec, url, {**base, **window_params(s, spec.window)}, s)
                 for i, s in enumerate(slices)]
    else:
        steps = [_step(0, spec, url, {**base, **window_params(window, spec.window)}, window)]
    body: dict[str, Any] = {
        "connector_profile": format_ref(resolved.ref),
        "resolved_profile_hash": resolved.hash,
        "pagination_mode": spec.pagination.mode,
        "request": {
            "method": spec.request.method,
            "url": url,
            "header_names": header_names(spec),
            "auth": {"mode": spec.auth.mode,
                     "secret_refs": [str(r) for r in spec.auth.secret_refs()]},
        },
        "steps": steps,
        "continuation": _continuation(spec),
        "records": {"path": spec.records.path, "id_field": spec.records.id_field,
                    "time_field": spec.records.time_field,
                    "time_format": spec.records.time_format,
                    "record_type": spec.records.record_type},
        "limits": {**applied, "max_payload_bytes": spec.transport.max_payload_bytes},
        "retry": spec.retry.model_dump(mode="json"),
        "rate_limit": spec.rate_limit.model_dump(mode="json"),
        "egress": {"dns_allowlist": list(spec.egress_policy.dns_allowlist),
                   "allowed_cidrs": list(spec.egress_policy.allowed_cidrs),
                   "allowed_ports": sorted(spec.egress_policy.allowed_ports or
                                           [spec.transport.port]),
                   "tls_verify": True},
    }
    body["plan_hash"] = hash_value(body)
    return Plan(body, tuple(findings))

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
from .profile import Auth, ConnectorSpec, LimitsSpec
from .refs import format_ref
from .windows import Window, count_slices, window_params

AUTH_HEADER = {"bearer": "Authorization", "basic": "Authorization"}


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


def auth_header_names(auth: Auth) -> list[str]:
    if auth.mode in AUTH_HEADER:
        return [AUTH_HEADER[auth.mode]]
    if auth.mode == "apiKeyHeader" and auth.header_name:
        return [auth.header_name]
    return []


def header_names(spec: ConnectorSpec) -> list[str]:
    """Every header name a request carries (values are never part of a plan)."""
    names = {"Accept", *spec.request.headers, *auth_header_names(spec.auth)}
    return sorted(names, key=str.lower)


def _static_params(spec: ConnectorSpec) -> dict[str, str]:
    params = {k: _param_text(v) for k, v in spec.request.params.items()}
    if spec.auth.mode == "apiKeyQuery" and spec.auth.query_param and spec.auth.secret_ref:
        params[spec.auth.query_param] = f"<{spec.auth.secret_ref}>"
    return params


def _param_text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_page_params(spec: ConnectorSpec) -> dict[str, str]:
    pg = spec.pagination
    params: dict[str, str] = {}
    if pg.limit_param and pg.page_size:
        params[pg.limit_param] = str(pg.page_size)
    if pg.mode == "offset" and pg.offset_param:
        params[pg.offset_param] = "0"
    if pg.mode == "page" and pg.page_param:
        params[pg.page_param] = str(pg.first_page)
    return params


def _step(index: int, spec: ConnectorSpec, url: str, params: dict[str, str],
          window: Window) -> dict[str, Any]:
    return {"index": index, "method": spec.request.method, "url": url,
            "params": dict(sorted(params.items())), "window": window.to_dict()}


def _continuation(spec: ConnectorSpec) -> dict[str, Any]:
    pg = spec.pagination
    rule: dict[str, Any] = {"source": pg.continuation_source, "on_violation": pg.on_violation}
    if pg.mode == "cursor" and pg.response_field:
        rule.update(request_param=pg.request_param, response_field=pg.response_field,
                    stop="cursor field absent, null or empty")
    elif pg.mode == "cursor":
        rule.update(response_field=pg.next_url_field, stop="next URL field absent, null or empty")
    elif pg.mode == "offset":
        rule.update(offset_param=pg.offset_param, increment=pg.page_size,
                    total_field=pg.total_field, stop="short or empty page, or offset >= total")
    elif pg.mode == "page":
        rule.update(page_param=pg.page_param, first_page=pg.first_page,
                    total_field=pg.total_field, stop="short or empty page, or page > total")
    elif pg.mode == "link":
        rule.update(header="Link", rel="next", stop="no rel=next link")
    elif pg.mode == "time-window":
        rule.update(slice_seconds=pg.slice_seconds, stop="last slice fetched")
    else:
        rule.update(stop="single request")
    return rule


def build_plan(resolved: ResolvedProfile, window: Window, limits: Limits | None = None) -> Plan:
    """The request plan (`plan` section of the output contract) with its hash."""
    spec = resolved.spec
    limits = limits or Limits()
    applied = limits.applied(spec.limits)
    url = spec.transport.base_url + spec.request.path
    base = {**_static_params(spec), **_first_page_params(spec)}
    findings: list[dict[str, str]] = []
    if spec.pagination.mode == "time-window" and spec.pagination.slice_seconds:
        total = count_slices(window, spec.pagination.slice_seconds)
        if total > applied["max_pages"]:
            findings.append({"code": "validation_failed", "path": "plan.steps",
                             "message": f"time-window needs {total} slices but max_pages is "
                                        f"{applied['max_pages']}"})
        slices = window.slices(spec.pagination.slice_seconds)[: applied["max_pages"]]
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

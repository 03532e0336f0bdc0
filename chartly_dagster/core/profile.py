"""The connector profile model: one pydantic schema for validation, errors and JSON Schema.

Unknown keys are rejected everywhere so a typo (`pagnation:`) fails at load instead of
silently changing behaviour; resolved profiles are frozen.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .hostnames import HostnameError, check_base_url_host, normalize_allowlist_pattern
from .refs import SEGMENT, is_valid_name, is_valid_segment, is_valid_version

API_VERSION = "chartly.io/v1alpha1"
Env = Literal["dev", "staging", "prod"]
TimeFormat = Literal["rfc3339", "epoch_s", "epoch_ms"]
WindowFormat = Literal["rfc3339", "epoch_s", "epoch_ms", "date"]
PaginationMode = Literal["cursor", "offset", "page", "time-window", "link", "none"]
ViolationPolicy = Literal["error", "finding"]

_PARAM_RE = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,64}$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_SECRET_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
_SECRET_KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}$")
_FIELD_PATH_RE = re.compile(r"^[A-Za-z0-9_$@-]+(?:\.[A-Za-z0-9_$@-]+)*$")
# Headers a profile may never set: credentials travel only through `auth`, and Host/proxy
# headers would let a profile talk past the egress guard.
FORBIDDEN_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "host", "x-api-key", "x-auth-token",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "connection",
    "transfer-encoding", "content-length", "te", "upgrade",
})


class StrictModel(BaseModel):
    """Base for every profile section: camelCase keys, unknown keys rejected, frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=False,
        str_strip_whitespace=False, validate_default=True,
    )


def _param_name(value: str, what: str) -> str:
    if not _PARAM_RE.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 of letters, digits, '_', '.', '-', '[]'")
    return value


def _field_path(value: str) -> str:
    if value and not _FIELD_PATH_RE.match(value):
        raise ValueError(f"field path {value!r} must be dot-separated names (e.g. 'data.items')")
    return value


class SecretRef(StrictModel):
    """A pointer to a secret (`<name>/<key>`, Kubernetes style); never the value."""

    name: str = Field(description="Secret name (DNS-1123 subdomain, like a Kubernetes Secret).")
    key: str = Field(description="Key inside the secret.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SECRET_NAME_RE.match(v):
            raise ValueError(f"secret name {v!r} must be lowercase letters, digits, '-' or '.'")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _SECRET_KEY_RE.match(v):
            raise ValueError(f"secret key {v!r} must be letters, digits, '.', '_' or '-'")
        return v

    def __str__(self) -> str:
        return f"secretRef:{self.name}/{self.key}"


class Transport(StrictModel):
    """Where the API lives and how long a request may take; TLS verification is not optional."""

    type: Literal["http"] = "http"
    base_url: str = Field(description="Absolute http(s) URL of the API root; no userinfo, query "
                                      "or fragment.")
    timeout_ms: int = Field(10_000, ge=100, le=300_000, description="Read/write timeout per phase.")
    connect_timeout_ms: int = Field(5_000, ge=100, le=60_000)
    deadline_ms: int = Field(60_000, ge=100, le=600_000,
                             description="Overall deadline for one request, body included.")
    max_payload_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024**3,
                                   description="Cap on one response's decoded body.")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"baseUrl {v!r} must use http or https")
        if not parts.hostname:
            raise ValueError(f"baseUrl {v!r} has no host")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise ValueError("baseUrl must not carry userinfo (credentials go in auth.secretRef)")
        if parts.query or parts.fragment:
            raise ValueError("baseUrl must not carry a query or fragment; use request.params")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"baseUrl {v!r} has an invalid port") from exc
        return v.rstrip("/")

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class EgressPolicy(StrictModel):
    """Where this profile may connect: DNS allowlist, CIDRs allowed into private space, ports."""

    dns_allowlist: list[str] = Field(min_length=1, description="Exact names or '*.suffix'.")
    allowed_cidrs: list[str] = Field(default_factory=list, description=(
        "The only way into non-public address space (loopback, private, ...); each env may "
        "restrict which ranges it accepts."))
    allowed_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, description="Ports allowed; empty means the base URL's port only.")
    allow_cross_origin_redirects: bool = False
    max_redirects: int = Field(5, ge=0, le=20)

    @field_validator("dns_allowlist")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        out = []
        for entry in v:
            try:
                out.append(normalize_allowlist_pattern(entry))
            except HostnameError as exc:
                raise ValueError(str(exc)) from exc
        return sorted(set(out))

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        out = []
        for entry in v:
            try:
                out.append(str(ipaddress.ip_network(entry, strict=True)))
            except ValueError as exc:
                raise ValueError(f"allowedCidrs entry {entry!r} is not a CIDR: {exc}") from exc
        return sorted(set(out))


class Auth(StrictModel):
    """How requests authenticate; the credential is always a `secretRef`."""

    mode: Literal["none", "bearer", "apiKeyHeader", "apiKeyQuery", "basic"] = "none"
    secret_ref: SecretRef | None = Field(None, description="Token, API key or basic password.")
    username_secret_ref: SecretRef | None = Field(None, description="Basic auth user name.")
    header_name: str | None = Field(None, description="Header for apiKeyHeader, e.g. X-API-Key.")
    query_param: str | None = Field(None, description="Query parameter for apiKeyQuery.")

    @model_validator(mode="after")
    def _by_mode(self) -> Auth:
        needs_secret = self.mode != "none"
        if needs_secret and self.secret_ref is None:
            raise ValueError(f"auth.mode {self.mode!r} needs auth.secretRef")
        if not needs_secret and (self.secret_ref or self.username_secret_ref):
            raise ValueError("auth.mode 'none' must not carry a secretRef")
        if (self.mode == "apiKeyHeader") != (self.header_name is not None):
            raise ValueError("auth.headerName is required for, and only for, mode apiKeyHeader")
        if (self.mode == "apiKeyQuery") != (self.query_param is not None):
            raise ValueError("auth.queryParam is required for, and only for, mode apiKeyQuery")
        if (self.mode == "basic") != (self.username_secret_ref is not None):
            raise ValueError("auth.usernameSecretRef is required for, and only for, mode basic")
        if self.header_name is not None and not _HEADER_RE.match(self.header_name):
            raise ValueError(f"auth.headerName {self.header_name!r} is not a header name")
        if self.header_name is not None and self.header_name.lower() in ("host", "cookie"):
            raise ValueError(f"auth.headerName {self.header_name!r} is not allowed")
        if self.query_param is not None:
            _param_name(self.query_param, "auth.queryParam")
        return self

    def secret_refs(self) -> list[SecretRef]:
        return [r for r in (self.secret_ref, self.username_secret_ref) if r is not None]


class RequestSpec(StrictModel):
    """The request a page is fetched with; read-only (GET) by design."""

    method: Literal["GET"] = "GET"
    path: str = Field("/", description="Path under baseUrl, starting with '/'.")
    params: dict[str, str | int | bool] = Field(default_factory=dict,
                                                description="Static query parameters.")
    headers: dict[str, str] = Field(default_factory=dict, description=(
        "Static, non-secret headers (e.g. Accept). Credentials go in auth."))

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or "?" in v or "#" in v or "//" in v or "\\" in v:
            raise ValueError(f"request.path {v!r} must start with '/' and hold no query, "
                             "fragment, '//' or backslash")
        if any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError(f"request.path {v!r} must not contain '.' or '..' segments")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            _param_name(name, "request.params key")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_RE.match(name):
                raise ValueError(f"request.headers key {name!r} is not a header name")
            if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
                raise ValueError(f"request.headers must not set {name!r}; credentials go in "
                                 "auth and routing headers are not allowed")
            if "\r" in value or "\n" in value:
                raise ValueError(f"request.headers[{name!r}] contains a line break")
        return v


class RecordsSpec(StrictModel):
    """Where records sit in a response body and which fields identify and time them."""

    path: str = Field("", description="Dot path to the record array; empty for a top-level "
                                      "array.")
    id_field: str = Field(description="Dot path of the record id.")
    time_field: str = Field(description="Dot path of the occurrence time.")
    time_format: TimeFormat = "rfc3339"
    record_type: str = Field("Event", min_length=1, max_length=64)

    @field_validator("path", "id_field", "time_field")
    @classmethod
    def _paths(cls, v: str, info: Any) -> str:
        if not v and info.field_name != "path":
            raise ValueError("must not be empty")
        return _field_path(v)


class WindowSpec(StrictModel):
    """How a window `[start, end)` becomes request parameters."""

    start_param: str | None = None
    end_param: str | None = None
    format: WindowFormat = "rfc3339"
    end_inclusive: bool = Field(False, description=(
        "The upstream treats the end bound as inclusive: send end minus one unit."))

    @model_validator(mode="after")
    def _names(self) -> WindowSpec:
        for name in (self.start_param, self.end_param):
            if name is not None:
                _param_name(name, "window param")
        return self


class PaginationSpec(StrictModel):
    """Pagination mode, its parameters and what happens when an invariant breaks."""

    mode: PaginationMode
    page_size: int | None = Field(None, ge=1, le=100_000)
    limit_param: str | None = Field(None, description="Name of the page-size parameter.")
    request_param: str | None = Field(None, description="cursor: parameter the cursor is sent in.")
    response_field: str | None = Field(None, description="cursor: body field holding the cursor.")
    next_url_field: str | None = Field(None, description="cursor: body field holding the next URL.")
    offset_param: str | None = None
    page_param: str | None = None
    first_page: int = Field(1, ge=0, le=1)
    total_field: str | None = Field(None, description="offset/page: body field holding the "
                                                      "declared total (records or pages).")
    slice_seconds: int | None = Field(None, ge=1, le=31 * 86400,
                                      description="time-window: length of one request's slice.")
    on_violation: ViolationPolicy = Field("error", description=(
        "What a broken invariant (repeated cursor, page past the total, duplicate id) does: "
        "fail the window, or stop cleanly and report a finding."))

    @model_validator(mode="after")
    def _by_mode(self) -> PaginationSpec:
        m = self.mode
        for name in ("limit_param", "request_param", "offset_param", "page_param"):
            value = getattr(self, name)
            if value is not None:
                _param_name(value, f"pagination.{to_camel(name)}")
        for name in ("response_field", "next_url_field", "total_field"):
            value = getattr(self, name)
            if value is not None:
                _field_path(value)
        allowed = {
            "cursor": {"page_size", "limit_param", "request_param", "response_field",
                       "next_url_field"},
            "offset": {"page_size", "limit_param", "offset_param", "total_field"},
            "page": {"page_size", "limit_param", "page_param", "first_page", "total_field"},
            "time-window": {"slice_seconds", "page_size", "limit_param"},
            "link": {"page_size", "limit_param"},
            "none": set(),
        }[m]
        optional = {"mode", "on_violation", "first_page"}
        for name in type(self).model_fields:
            if name in optional or name in allowed:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"pagination.{to_camel(name)} does not apply to mode {m!r}")
        if (self.page_size is None) != (self.limit_param is None) and m != "page":
            raise ValueError("pagination.pageSize and pagination.limitParam go together")
        if m == "cursor":
            body_cursor = self.request_param is not None and self.response_field is not None
            if body_cursor == (self.next_url_field is not None) or (
                    (self.request_param is None) != (self.response_field is None)):
                raise ValueError("cursor pagination needs either requestParam + responseField "
                                 "(a cursor in the body) or nextUrlField (a next URL in the body)")
        elif m == "offset":
            if not (self.offset_param and self.page_size):
                raise ValueError("offset pagination needs offsetParam, limitParam and pageSize")
        elif m == "page":
            if not (self.page_param and self.page_size):
                raise ValueError("page pagination needs pageParam and pageSize")
        elif m == "time-window" and self.slice_seconds is None:
            raise ValueError("time-window pagination needs sliceSeconds")
        return self

    @property
    def continuation_source(self) -> str:
        """Where the next request comes from: body cursor, body next URL, Link header, ..."""
        if self.mode == "cursor":
            return "body_cursor" if self.response_field else "body_next_url"
        return {"offset": "offset_arithmetic", "page": "page_arithmetic",
                "time-window": "window_slices", "link": "link_header", "none": "none"}[self.mode]


class RetrySpec(StrictModel):
    """Bounded retries for transient and throttled failures (seed 001 retry classes)."""

    max_attempts: int = Field(4, ge=1, le=10, description="Attempts per request, first included.")
    backoff_ms: int = Field(500, ge=1, le=60_000)
    max_backoff_ms: int = Field(30_000, ge=1, le=600_000)
    max_retry_after_ms: int = Field(60_000, ge=0, le=600_000,
                                    description="Longest Retry-After honoured before giving up.")
    budget_per_window: int = Field(20, ge=0, le=1000,
                                   description="Retries allowed across one window.")
    jitter: bool = True


class RateLimitSpec(StrictModel):
    max_requests_per_minute: int = Field(ge=1, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=100_000)


class LimitsSpec(StrictModel):
    """Hard caps per window; CLI flags may only lower them."""

    max_pages: int = Field(10_000, ge=1, le=10_000_000)
    max_records: int = Field(10_000_000, ge=1, le=1_000_000_000)
    max_bytes: int = Field(4 * 1024**3, ge=1, le=1024**4)


class PartitionsSpec(StrictModel):
    """The explicit time windows a profile is partitioned by."""

    cadence: Literal["hourly", "daily", "weekly", "custom"] = "daily"
    start: datetime = Field(description="First window start, RFC3339 with offset.")
    timezone: str = "UTC"
    cron: str | None = Field(None, description="custom cadence: cron schedule of window starts.")
    end_offset: int = Field(0, ge=0, le=0, description="Only completed windows are partitions.")

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("partitions.start needs a UTC offset (e.g. 2026-01-01T00:00:00Z)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"partitions.timezone {v!r} is not an IANA time zone") from exc
        return v

    @model_validator(mode="after")
    def _cron(self) -> PartitionsSpec:
        if (self.cadence == "custom") != (self.cron is not None):
            raise ValueError("partitions.cron is required for, and only for, cadence custom")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"partitions.cron {self.cron!r} must have five fields")
        return self


class RecordingSpec(StrictModel):
    enabled: bool = Field(description="Keep every response of a window (gzip, content-"
                                      "addressed) next to its partition file, so the window can "
                                      "be replayed offline and re-derived by the determinism "
                                      "check. Absent: on in dev, off in staging and prod.")


class ConnectorSpec(StrictModel):
    envs: list[Env] = Field(min_length=1, description="Environments that may run this profile.")
    transport: Transport
    egress_policy: EgressPolicy
    auth: Auth = Field(default_factory=Auth)
    request: RequestSpec = Field(default_factory=RequestSpec)
    records: RecordsSpec
    window: WindowSpec = Field(default_factory=WindowSpec)
    pagination: PaginationSpec
    retry: RetrySpec = Field(default_factory=RetrySpec)
    rate_limit: RateLimitSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    partitions: PartitionsSpec
    golden: str | None = Field(None, description="Golden plan file (relative to the profiles "
                                                 "folder's parent) the determinism check uses.")
    recording: RecordingSpec | None = Field(None, description=(
        "Response recording for replay and re-derivation; absent: on in dev only."))

    @model_serializer(mode="wrap")
    def _omit_unset_recording(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An absent setting stays out of the dump, so profiles without one keep the
        # resolved (and plan) hashes they had before the setting existed.
        data = handler(self)
        if self.recording is None:
            data.pop("recording", None)
        return data

    @field_validator("envs")
    @classmethod
    def _envs(cls, v: list[str]) -> list[str]:
        order = {"dev": 0, "staging": 1, "prod": 2}
        return sorted(set(v), key=order.__getitem__)

    @model_validator(mode="after")
    def _coherent(self) -> ConnectorSpec:
        check_base_url_host(self.transport.host, self.egress_policy.dns_allowlist,
                            self.egress_policy.allowed_cidrs)
        if self.pagination.mode == "time-window" and not (
                self.window.start_param and self.window.end_param):
            raise ValueError("time-window pagination needs window.startParam and window.endParam")
        names = [n for n in (self.window.start_param, self.window.end_param,
                             self.pagination.limit_param, self.pagination.request_param,
                             self.pagination.offset_param, self.pagination.page_param,
                             self.auth.query_param) if n]
        clash = sorted({n for n in names if names.count(n) > 1 or n in self.request.params})
        if clash:
            raise ValueError(f"query parameter(s) {', '.join(clash)} are set twice")
        if self.auth.header_name and self.auth.header_name.lower() in {
                h.lower() for h in self.request.headers}:
            raise ValueError(f"request.headers sets auth header {self.auth.header_name!r}")
        return self


class Metadata(StrictModel):
    kind: Literal["connector"]
    name: str
    namespace: str = Field(description="tenant/project")
    version: str
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_valid_name(v):
            raise ValueError(f"metadata.name {v!r}: lowercase letters, digits, '.', '_', '-'")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        parts = v.split("/")
        if len(parts) != 2 or not all(is_valid_segment(p) for p in parts):
            raise ValueError(f"metadata.namespace {v!r} must be 'tenant/project' "
                             f"(each {SEGMENT})")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not is_valid_version(v):
            raise ValueError(f"metadata.version {v!r} is not a semantic version")
        return v

    @field_validator("owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        for owner in v:
            if not (owner.startswith("team:") or "@" in owner):
                raise ValueError(f"owner {owner!r} must be 'team:<name>' or an email address")
        return v


class ConnectorProfile(StrictModel):
    """A connector profile document; `variants` are overlays applied by resolution."""

    api_version: Literal["chartly.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Profile"]
    metadata: Metadata
    spec: ConnectorSpec
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Named overlays (JSON merge patch, RFC 7386) over this document's spec."))

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, overlay in v.items():
            if not is_valid_segment(name):
                raise ValueError(f"variant name {name!r}: lowercase letters, digits and '-'")
            if not isinstance(overlay, dict) or set(overlay) - {"spec", "metadata"}:
                raise ValueError(f"variant {name!r} may only overlay 'spec' and "
                                 "'metadata.description/owners/labels'")
            meta = overlay.get("metadata") or {}
            if not isinstance(meta, dict) or set(meta) - {"description", "owners", "labels"}:
                raise ValueError(f"variant {name!r} may only change metadata.description, "
                                 "owners and labels")
        return v

    @property
    def tenant(self) -> str:
        return self.metadata.namespace.split("/")[0]

    @property
    def project(self) -> str:
        return self.metadata.namespace.split("/")[1]


def profile_json_schema() -> dict[str, Any]:
    """JSON Schema of a profile file, for editors and CI linters."""
    schema = ConnectorProfile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://chartly.io/schemas/connector-profile.v1alpha1.json"
    schema["title"] = "Chartly connector profile (chartly.io/v1alpha1)"
    return schema

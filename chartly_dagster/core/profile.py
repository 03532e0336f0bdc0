"""The connector profile model: one pydantic schema for validation, errors and JSON Schema.

Unknown keys are rejected everywhere so a typo (`pagnation:`) fails at load instead of
silently changing behaviour; resolved profiles are frozen.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .columns import JOIN_COLUMNS, TIMESTAMP_FORMATS, parse_column_type
from .hostnames import HostnameError, check_base_url_host, normalize_allowlist_pattern
from .refs import SEGMENT, is_valid_name, is_valid_segment, is_valid_version
from .schema import with_variant_schema

API_VERSION = "chartly.io/v1alpha1"
Env = Literal["dev", "staging", "prod"]
TimeFormat = Literal["rfc3339", "epoch_s", "epoch_ms"]
WindowFormat = Literal["rfc3339", "epoch_s", "epoch_ms", "date"]
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
    """Base for every profile section: camelCase keys, unknown keys rejected, frozen.

    Strict types: YAML `true` is not the integer 1 and `"500"` is not 500, so a typo is an
    error instead of a silently different profile.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=False,
        str_strip_whitespace=False, validate_default=True, strict=True,
    )
    #: Fields added after v1alpha1 profiles were first hashed: dumped only when set, so a
    #: profile that does not use them keeps its resolved hash and its golden plans.
    added_fields: ClassVar[frozenset[str]] = frozenset()
    #: The v1alpha1 layout of a section that is now a union of modes: every key, with the
    #: value a mode that does not take it used to dump. Same reason: stable hashes.
    legacy_layout: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _stable_dump(self, handler: SerializerFunctionWrapHandler,
                     info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        key = to_camel if info.by_alias else str
        for name in self.added_fields:
            if data.get(key(name), 0) is None:
                del data[key(name)]
        return {**{key(k): v for k, v in self.legacy_layout.items()}, **data}


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


def _mode_union(*modes: type[BaseModel], default_mode: str | None = None) -> WrapValidator:
    """Errors of a union on `mode` as if it were one section.

    Pydantic puts the chosen mode in each error's location (`pagination.cursor.pageSize`);
    profile errors name the profile's own keys (`pagination.pageSize`), a bad or missing
    mode is reported at `mode`, and a key of another mode says which mode refused it.
    """
    keys = {field.alias or name for mode in modes for name, field in mode.model_fields.items()}
    tags = ", ".join(get_args(mode.model_fields["mode"].annotation)[0] for mode in modes)

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if default_mode is not None and isinstance(value, dict) and "mode" not in value:
            value = {**value, "mode": default_mode}
        try:
            return handler(value)
        except ValidationError as exc:
            mode = value.get("mode") if isinstance(value, dict) else None
            errors: list[Any] = []
            for err in exc.errors():
                loc = tuple(err["loc"])
                if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    errors.append({"type": PydanticCustomError(
                        "invalid_mode", f"mode must be one of {tags}"),
                        "loc": ("mode",), "input": mode})
                    continue
                loc = loc[1:]
                if err["type"] == "extra_forbidden" and len(loc) == 1 and loc[0] in keys:
                    errors.append({"type": PydanticCustomError(
                        "not_for_mode", f"{loc[-1]} does not apply to mode {mode!r}"),
                        "loc": loc, "input": err["input"]})
                    continue
                errors.append({"type": err["type"], "loc": loc, "input": err["input"],
                               **({"ctx": err["ctx"]} if "ctx" in err else {})})
            raise ValidationError.from_exception_data(exc.title, errors) from None

    return WrapValidator(validate)


class _AuthMode(StrictModel):
    """What every auth mode answers, so callers ask the section instead of switching on mode."""

    legacy_layout: ClassVar[dict[str, Any]] = dict.fromkeys(
        ("secret_ref", "username_secret_ref", "header_name", "query_param"))

    def secret_refs(self) -> list[SecretRef]:
        return []

    def credential_header(self) -> str | None:
        """The request header that carries the credential, if any."""
        return None

    def credential_param(self) -> str | None:
        """The query parameter that carries the credential, if any."""
        return None

    def username_ref(self) -> SecretRef | None:
        return None


class NoAuth(_AuthMode):
    """No credential."""

    mode: Literal["none"] = "none"


class _SecretAuth(_AuthMode):
    secret_ref: SecretRef = Field(description="Token, API key or basic password.")

    def secret_refs(self) -> list[SecretRef]:
        return [self.secret_ref]


class BearerAuth(_SecretAuth):
    """`Authorization: Bearer <secret>`."""

    mode: Literal["bearer"]

    def credential_header(self) -> str:
        return "Authorization"


class ApiKeyHeaderAuth(_SecretAuth):
    """The secret in a header of the profile's choosing."""

    mode: Literal["apiKeyHeader"]
    header_name: str = Field(description="Header for the key, e.g. X-API-Key.")

    @field_validator("header_name")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _HEADER_RE.match(v):
            raise ValueError(f"auth.headerName {v!r} is not a header name")
        if v.lower() in ("host", "cookie"):
            raise ValueError(f"auth.headerName {v!r} is not allowed")
        return v

    def credential_header(self) -> str:
        return self.header_name


class ApiKeyQueryAuth(_SecretAuth):
    """The secret in a query parameter (redacted wherever a URL is printed)."""

    mode: Literal["apiKeyQuery"]
    query_param: str = Field(description="Query parameter for the key.")

    @field_validator("query_param")
    @classmethod
    def _param(cls, v: str) -> str:
        return _param_name(v, "auth.queryParam")

    def credential_param(self) -> str:
        return self.query_param


class BasicAuth(_SecretAuth):
    """HTTP basic auth: user name and password, both secrets."""

    mode: Literal["basic"]
    username_secret_ref: SecretRef = Field(description="Basic auth user name.")

    def secret_refs(self) -> list[SecretRef]:
        return [self.secret_ref, self.username_secret_ref]

    def credential_header(self) -> str:
        return "Authorization"

    def username_ref(self) -> SecretRef:
        return self.username_secret_ref


#: How requests authenticate; the credential is always a `secretRef`. `mode` defaults to none.
_AUTH_MODES = (NoAuth, BearerAuth, ApiKeyHeaderAuth, ApiKeyQueryAuth, BasicAuth)
Auth = Annotated[NoAuth | BearerAuth | ApiKeyHeaderAuth | ApiKeyQueryAuth | BasicAuth,
                 Field(discriminator="mode"), _mode_union(*_AUTH_MODES, default_mode="none")]


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


class ColumnSpec(StrictModel):
    """One declared typed column: where it comes from in the record and what type it has."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                      description="Column name in the typed table.")
    source: str | None = Field(None, description="Dot path in the record; default: the name.")
    type: str = Field(description="string, int64, float64, bool, timestamp, date, "
                                  "decimal(p,s) or json (the value as JSON text).")
    format: str | None = Field(None, description="For timestamp: rfc3339 (default), epoch_s "
                                                 "or epoch_ms.")
    nullable: bool = True
    description: str = ""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        return None if v is None else _field_path(v)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return str(parse_column_type(v))

    @model_validator(mode="after")
    def _format(self) -> ColumnSpec:
        if self.name in JOIN_COLUMNS:
            raise ValueError(f"column name {self.name!r} is reserved for the envelope's join "
                             f"columns ({', '.join(JOIN_COLUMNS)})")
        if self.format is not None and (self.type != "timestamp"
                                        or self.format not in TIMESTAMP_FORMATS):
            raise ValueError(f"format applies to timestamp columns only and must be one of "
                             f"{', '.join(TIMESTAMP_FORMATS)}")
        return self


class RecordsSpec(StrictModel):
    """Where records sit in a response body and which fields identify and time them."""

    path: str = Field("", description="Dot path to the record array; empty for a top-level "
                                      "array.")
    id_field: str = Field(description="Dot path of the record id.")
    time_field: str = Field(description="Dot path of the occurrence time.")
    time_format: TimeFormat = "rfc3339"
    record_type: str = Field("Event", min_length=1, max_length=64)
    columns: list[ColumnSpec] | None = Field(None, description=(
        "Typed columns of the downstream typed asset; omitted: inferred from the data."))
    added_fields: ClassVar[frozenset[str]] = frozenset({"columns"})

    @field_validator("path", "id_field", "time_field")
    @classmethod
    def _paths(cls, v: str, info: Any) -> str:
        if not v and info.field_name != "path":
            raise ValueError("must not be empty")
        return _field_path(v)

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, v: list[ColumnSpec] | None) -> list[ColumnSpec] | None:
        names = [c.name for c in v or ()]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        if v is not None and not v:
            raise ValueError("declare at least one column, or omit columns to infer them")
        return v


class WindowSpec(StrictModel):
    """How a window `[start, end)` becomes request parameters."""

    start_param: str | None = None
    end_param: str | None = None
    format: WindowFormat = "rfc3339"
    end_inclusive: bool = Field(False, description=(
        "The upstream treats the end bound as inclusive. A date end is then the last day "
        "of the window; an instant end is sent as is (end minus one unit would lose the "
        "instants between) and records at the end are dropped."))

    @model_validator(mode="after")
    def _names(self) -> WindowSpec:
        for name in (self.start_param, self.end_param):
            if name is not None:
                _param_name(name, "window param")
        return self


class _PaginationMode(StrictModel):
    """What every pagination mode answers for the plan; the runtime walks it in `paginate.py`.

    Each mode is one class holding only the keys it takes, so the JSON Schema tells an
    editor exactly which keys a mode accepts; behaviour that differs by mode is a method
    here (plan side) or in the mode's paginator (runtime side), never an `if mode` chain.
    """

    legacy_layout: ClassVar[dict[str, Any]] = {
        **dict.fromkeys(("page_size", "limit_param", "request_param", "response_field",
                         "next_url_field", "offset_param", "page_param", "total_field",
                         "slice_seconds")), "first_page": 1}
    added_fields: ClassVar[frozenset[str]] = frozenset({"total_header", "error_field"})
    #: where the next request comes from (plan `continuation.source`)
    continuation_source: ClassVar[str]

    on_violation: ViolationPolicy = Field("error", description=(
        "What a broken invariant (repeated cursor, page past the total, duplicate id, a "
        "window that did not end explicitly) does: fail the window, or stop cleanly and "
        "report a finding."))
    error_field: str | None = Field(None, description=(
        "Body field that signals an error on HTTP 200 (e.g. 'error'): present and not "
        "empty, the page fails with its message."))

    @field_validator("error_field")
    @classmethod
    def _error_field(cls, v: str | None) -> str | None:
        return None if v is None else _field_path(v)

    @model_validator(mode="after")
    def _names(self) -> _PaginationMode:
        for name in self.param_names():
            _param_name(name, "pagination parameter")
        return self

    def param_names(self) -> list[str]:
        """Query parameters this mode sets (checked against the request's other params)."""
        return []

    def first_request_params(self) -> dict[str, str]:
        """Parameters of the first request of a window (or of each time slice)."""
        return {}

    def continuation_rule(self) -> dict[str, Any]:
        """The mode's part of the plan's `continuation`: its parameters and how it stops."""
        return {}

    def slice_length(self) -> int | None:
        """Seconds per request when a window is fetched in slices; None: one walk per window."""
        return None

    def check_window(self, start_param: str | None, end_param: str | None) -> None:
        """Raise ValueError when the mode needs window parameters the profile lacks."""


class _PagedMode(_PaginationMode):
    """Modes whose page size the request may set (`limitParam=pageSize`)."""

    size_pair_required: ClassVar[bool] = True
    page_size: int | None = Field(None, ge=1, le=100_000)
    limit_param: str | None = Field(None, description="Name of the page-size parameter.")

    @model_validator(mode="after")
    def _size_pair(self) -> _PagedMode:
        if self.size_pair_required and (self.page_size is None) != (self.limit_param is None):
            raise ValueError("pagination.pageSize and pagination.limitParam go together")
        return self

    def param_names(self) -> list[str]:
        return [self.limit_param] if self.limit_param else []

    def first_request_params(self) -> dict[str, str]:
        if self.limit_param and self.page_size:
            return {self.limit_param: str(self.page_size)}
        return {}


class _TotalsMode(_PagedMode):
    """Modes that may check a declared total: the records fetched must equal it."""

    total_field: str | None = Field(None, description=(
        "Body field holding the declared number of records in the window."))
    total_header: str | None = Field(None, description=(
        "Response header holding the declared number of records (e.g. X-Total-Count)."))

    @model_validator(mode="after")
    def _totals(self) -> _TotalsMode:
        if self.total_field is not None:
            _field_path(self.total_field)
        if self.total_header is not None and not _HEADER_RE.match(self.total_header):
            raise ValueError(f"pagination.totalHeader {self.total_header!r} is not a header "
                             "name")
        if self.total_field is not None and self.total_header is not None:
            raise ValueError("pagination.totalField and pagination.totalHeader: name one")
        return self

    def _total_rule(self) -> dict[str, Any]:
        return {"total_header": self.total_header} if self.total_header else {}


class CursorPagination(_TotalsMode):
    """The body names the next page: a cursor sent back in a parameter, or a next URL."""

    mode: Literal["cursor"]
    request_param: str | None = Field(None, description="Parameter the cursor is sent in.")
    response_field: str | None = Field(None, description="Body field holding the cursor.")
    next_url_field: str | None = Field(None, description="Body field holding the next URL.")

    @model_validator(mode="after")
    def _style(self) -> CursorPagination:
        for value in (self.response_field, self.next_url_field):
            if value is not None:
                _field_path(value)
        body_cursor = self.request_param is not None and self.response_field is not None
        if body_cursor == (self.next_url_field is not None) or (
                (self.request_param is None) != (self.response_field is None)):
            raise ValueError("cursor pagination needs either requestParam + responseField "
                             "(a cursor in the body) or nextUrlField (a next URL in the body)")
        return self

    @property
    def continuation_field(self) -> tuple[str, str]:
        """(profile key, body field) the continuation is read from."""
        if self.response_field:
            return "responseField", self.response_field
        return "nextUrlField", str(self.next_url_field)

    @property  # type: ignore[misc]
    def continuation_source(self) -> str:  # one mode, two styles
        return "body_cursor" if self.response_field else "body_next_url"

    def param_names(self) -> list[str]:
        return super().param_names() + ([self.request_param] if self.request_param else [])

    def continuation_rule(self) -> dict[str, Any]:
        if self.response_field:
            rule = {"request_param": self.request_param, "response_field": self.response_field,
                    "stop": "cursor field null or empty (absent: profile error)"}
        else:
            rule = {"response_field": self.next_url_field,
                    "stop": "next URL field null or empty (absent: profile error)"}
        return {**rule, **({"total_field": self.total_field} if self.total_field else {}),
                **self._total_rule()}


class OffsetPagination(_TotalsMode):
    """The client counts: `offsetParam` advances by `pageSize` until a short page."""

    continuation_source: ClassVar[str] = "offset_arithmetic"
    mode: Literal["offset"]
    offset_param: str

    @model_validator(mode="after")
    def _needs(self) -> OffsetPagination:
        if not self.page_size:
            raise ValueError("offset pagination needs offsetParam, limitParam and pageSize")
        return self

    def param_names(self) -> list[str]:
        return [*super().param_names(), self.offset_param]

    def first_request_params(self) -> dict[str, str]:
        return {**super().first_request_params(), self.offset_param: "0"}

    def continuation_rule(self) -> dict[str, Any]:
        return {"offset_param": self.offset_param, "increment": self.page_size,
                "total_field": self.total_field,
                "stop": "short or empty page, or offset >= total", **self._total_rule()}


class PagePagination(_TotalsMode):
    """The client counts pages: `pageParam` from `firstPage` up until a short page."""

    continuation_source: ClassVar[str] = "page_arithmetic"
    #: the API may imply the page size: limitParam is optional here
    size_pair_required: ClassVar[bool] = False
    mode: Literal["page"]
    page_param: str
    first_page: int = Field(1, ge=0, le=1)

    @model_validator(mode="after")
    def _needs(self) -> PagePagination:
        if not self.page_size:
            raise ValueError("page pagination needs pageParam and pageSize")
        return self

    def param_names(self) -> list[str]:
        return [*super().param_names(), self.page_param]

    def first_request_params(self) -> dict[str, str]:
        return {**super().first_request_params(), self.page_param: str(self.first_page)}

    def continuation_rule(self) -> dict[str, Any]:
        return {"page_param": self.page_param, "first_page": self.first_page,
                "total_field": self.total_field,
                "stop": "short or empty page, or records >= total", **self._total_rule()}


class TimeWindowPagination(_PagedMode):
    """One request per `sliceSeconds` slice of the window; a full slice may be truncated."""

    continuation_source: ClassVar[str] = "window_slices"
    mode: Literal["time-window"]
    slice_seconds: int = Field(ge=1, le=31 * 86400,
                               description="Length of one request's slice.")

    def continuation_rule(self) -> dict[str, Any]:
        return {"slice_seconds": self.slice_seconds, "stop": "last slice fetched"}

    def slice_length(self) -> int:
        return self.slice_seconds

    def check_window(self, start_param: str | None, end_param: str | None) -> None:
        if not (start_param and end_param):
            raise ValueError("time-window pagination needs window.startParam and "
                             "window.endParam")


class LinkPagination(_TotalsMode):
    """The next page is the `rel="next"` target of an RFC 8288 `Link` header."""

    continuation_source: ClassVar[str] = "link_header"
    mode: Literal["link"]

    def continuation_rule(self) -> dict[str, Any]:
        return {"header": "Link", "rel": "next", "stop": "no rel=next link",
                **({"total_field": self.total_field} if self.total_field else {}),
                **self._total_rule()}


class NoPagination(_PaginationMode):
    """One request per window."""

    continuation_source: ClassVar[str] = "none"
    mode: Literal["none"]

    def continuation_rule(self) -> dict[str, Any]:
        return {"stop": "single request"}


#: Pagination mode, its parameters and what happens when an invariant breaks.
_PAGINATION_MODES = (CursorPagination, OffsetPagination, PagePagination, TimeWindowPagination,
                     LinkPagination, NoPagination)
Pagination = Annotated[
    CursorPagination | OffsetPagination | PagePagination | TimeWindowPagination
    | LinkPagination | NoPagination, Field(discriminator="mode"),
    _mode_union(*_PAGINATION_MODES)]
#: every pagination mode's name, in the order above
PAGINATION_MODES: tuple[str, ...] = tuple(
    get_args(mode.model_fields["mode"].annotation)[0] for mode in _PAGINATION_MODES)


class RetrySpec(StrictModel):
    """Bounded retries for transient and throttled failures (docs/contract.md#retry)."""

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

    added_fields: ClassVar[frozenset[str]] = frozenset({"max_concurrent_windows"})

    cadence: Literal["hourly", "daily", "weekly", "custom"] = "daily"
    start: datetime = Field(strict=False, description="First window start, RFC3339 with "
                                                      "offset (YAML gives it as text).")
    timezone: str = "UTC"
    cron: str | None = Field(None, description="custom cadence: cron schedule of window starts.")
    end_offset: int = Field(0, ge=0, le=0, description="Only completed windows are partitions.")
    max_concurrent_windows: int | None = Field(None, ge=1, le=16, description=(
        "Windows of one range run fetched at once (sharing the rate limit); a deployment "
        "may lower it. Default 4."))

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


class FreshnessSpec(StrictModel):
    """How stale the newest materialized window may get before the asset counts as late."""

    fail_after_minutes: int = Field(ge=1, le=366 * 24 * 60, description=(
        "Minutes since the last materialization after which Dagster marks the asset "
        "failed-fresh (e.g. 1800 for a daily window with six hours to land)."))
    warn_after_minutes: int | None = Field(None, ge=1, le=366 * 24 * 60, description=(
        "Earlier warning threshold; must be below failAfterMinutes."))

    @model_validator(mode="after")
    def _order(self) -> FreshnessSpec:
        if self.warn_after_minutes is not None and (
                self.warn_after_minutes >= self.fail_after_minutes):
            raise ValueError("freshness.warnAfterMinutes must be below failAfterMinutes")
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
    auth: Auth = Field(default_factory=NoAuth)
    request: RequestSpec = Field(default_factory=RequestSpec)
    records: RecordsSpec
    window: WindowSpec = Field(default_factory=WindowSpec)
    pagination: Pagination
    retry: RetrySpec = Field(default_factory=RetrySpec)
    rate_limit: RateLimitSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    partitions: PartitionsSpec
    golden: str | None = Field(None, description="Golden plan file (relative to the profiles "
                                                 "folder's parent) the determinism check uses.")
    freshness: FreshnessSpec | None = Field(None, description=(
        "How stale the newest window may get; the Dagster asset carries it as its "
        "freshness policy."))
    recording: RecordingSpec | None = Field(None, description=(
        "Response recording for replay and re-derivation; absent: on in dev only."))
    added_fields: ClassVar[frozenset[str]] = frozenset({"freshness", "recording"})

    @field_validator("envs")
    @classmethod
    def _envs(cls, v: list[str]) -> list[str]:
        order = {"dev": 0, "staging": 1, "prod": 2}
        return sorted(set(v), key=order.__getitem__)

    @model_validator(mode="after")
    def _coherent(self) -> ConnectorSpec:
        check_base_url_host(self.transport.host, self.egress_policy.dns_allowlist,
                            self.egress_policy.allowed_cidrs)
        self.pagination.check_window(self.window.start_param, self.window.end_param)
        names = [n for n in (self.window.start_param, self.window.end_param,
                             *self.pagination.param_names(), self.auth.credential_param())
                 if n]
        clash = sorted({n for n in names if names.count(n) > 1 or n in self.request.params})
        if clash:
            raise ValueError(f"query parameter(s) {', '.join(clash)} are set twice")
        header = self.auth.credential_header()
        if header and header.lower() in {h.lower() for h in self.request.headers}:
            raise ValueError(f"request.headers sets auth header {header!r}")
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
    schema = with_variant_schema(schema, spec_def="ConnectorSpec", metadata_def="Metadata",
                                 description=schema["properties"]["variants"]["description"])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://chartly.io/schemas/connector-profile.v1alpha1.json"
    schema["title"] = "Chartly connector profile (chartly.io/v1alpha1)"
    return schema

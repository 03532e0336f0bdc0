"""Starter profiles: a valid, commented profile for each pagination mode, ready to adapt.

`chartly-tool profiles new` and the dg component's scaffolder both write one, so a first
connector starts from a file that already plans and runs (its `#dev` variant points at the
local sandbox, whose endpoint for that mode it uses) instead of from an empty folder.
Pure text generation: the tests load every starter through the catalog and fetch a window
with it from the sandbox, so a template that drifts from the model or the sandbox fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .profile import PAGINATION_MODES
from .refs import is_valid_name, is_valid_segment

DEFAULT_NAMESPACE = "my-tenant/my-project"
DEFAULT_SANDBOX_PORT = 8765


@dataclass(frozen=True)
class _ModeTemplate:
    """The sandbox endpoint that speaks one pagination mode, as profile YAML lines."""

    explain: str  # how this API pages, as comment lines
    path: str
    records: str
    window: str
    pagination: str


_TEMPLATES: dict[str, _ModeTemplate] = {
    "cursor": _ModeTemplate(
        "each page's body carries the next page's cursor (next_cursor); for a next URL\n"
        "in the body, use nextUrlField: links.next instead of requestParam/responseField",
        "/v1/events",
        "{path: data.items, idField: id, timeField: occurred_at, timeFormat: rfc3339}",
        "{startParam: since, endParam: until, format: rfc3339}",
        "{mode: cursor, pageSize: 500, limitParam: limit, requestParam: cursor,\n"
        "               responseField: next_cursor}"),
    "offset": _ModeTemplate(
        "offset/limit; the body declares the window's total, so a short read is caught",
        "/v2/orders",
        "{path: results, idField: order_id, timeField: created, timeFormat: epoch_s}",
        "{startParam: from, endParam: to, format: epoch_s}",
        "{mode: offset, pageSize: 1000, limitParam: limit, offsetParam: offset,\n"
        "               totalField: total}"),
    "page": _ModeTemplate(
        "numbered pages (page=1, 2, ...); this API's end date is inclusive",
        "/v1/invoices",
        '{path: "", idField: invoice_id, timeField: issued_at}',
        "{startParam: start_date, endParam: end_date, format: date, endInclusive: true}",
        "{mode: page, pageSize: 200, limitParam: per_page, pageParam: page}"),
    "time-window": _ModeTemplate(
        "one request per slice of the window (here an hour), no continuation token",
        "/v1/metrics",
        "{path: records, idField: metric_id, timeField: ts, timeFormat: epoch_ms}",
        "{startParam: start, endParam: end, format: epoch_ms}",
        "{mode: time-window, sliceSeconds: 3600, pageSize: 10000, limitParam: limit}"),
    "link": _ModeTemplate(
        'the next page\'s URL is in the RFC 8288 Link header (rel="next")',
        "/v1/tickets",
        '{path: "", idField: ticket_id, timeField: updated_at}',
        "{startParam: updated_after, endParam: updated_before}",
        "{mode: link, pageSize: 100, limitParam: per_page}"),
    "none": _ModeTemplate(
        "the whole window in one response",
        "/v1/metrics",
        "{path: records, idField: metric_id, timeField: ts, timeFormat: epoch_ms}",
        "{startParam: start, endParam: end, format: epoch_ms}",
        "{mode: none}"),
}


def starter_profile(name: str, pagination: str, *, namespace: str = DEFAULT_NAMESPACE,
                    sandbox_port: int = DEFAULT_SANDBOX_PORT) -> str:
    """The YAML text of a starter profile `name` paging in `pagination` mode.

    UsageError (exit 2) names the argument that is wrong; the text always validates.
    """
    if not is_valid_name(name):
        raise UsageError(f"profile name {name!r} must be lowercase letters, digits, '.', '_' "
                         "or '-' (e.g. orders)", field="NAME")
    if pagination not in _TEMPLATES:
        raise UsageError(f"pagination mode {pagination!r} is not one of "
                         f"{', '.join(PAGINATION_MODES)}", field="--pagination")
    tenant, _, project = namespace.partition("/")
    if not (is_valid_segment(tenant) and is_valid_segment(project)):
        raise UsageError(f"namespace {namespace!r} must be TENANT/PROJECT, each lowercase "
                         "letters, digits and '-'", field="--namespace")
    if not 1 <= sandbox_port <= 65535:
        raise UsageError(f"sandbox port {sandbox_port} is not in 1..65535",
                         field="--sandbox-port")
    mode = _TEMPLATES[pagination]
    explain = "\n".join(f"  # {line}" for line in mode.explain.splitlines())
    ref = f"{namespace}::connector/{name}@0.1.0#dev"
    return f"""\
# Connector profile {name!r}: {pagination} pagination. Its #dev variant runs as is against
# the local sandbox (`chartly-tool sandbox serve --port {sandbox_port}`):
#   chartly-tool connector-tester run --apply --env dev --tenant {tenant} \\
#     --project {project} --connector-profile "{ref}" \\
#     --window-start 2026-02-01T00:00:00Z --window-end 2026-02-02T00:00:00Z
#
# To point it at your API, edit the base spec (what env prod runs):
#   1. transport.baseUrl and egressPolicy.dnsAllowlist: your API's host.
#   2. auth: e.g. {{mode: bearer, secretRef: {{name: my-api, key: token}}}}; the value is read
#      from $CHARTLY_SECRET_MY_API_TOKEN or a mounted secrets folder, never from this file.
#   3. request.path, records (where the record list is, its id and time fields), window
#      (the query parameters bounding a window) and pagination (see its comment).
#   4. rateLimit, partitions (cadence and first window) and freshness (when it is late).
# `chartly-tool profiles schema` prints the JSON Schema for your editor;
# `chartly-tool sandbox serve --list` shows what each sandbox endpoint expects.
apiVersion: chartly.io/v1alpha1
kind: Profile
metadata:
  kind: connector
  name: {name}
  namespace: {namespace}
  version: 0.1.0
  description: Starter profile ({pagination} pagination), adapt it to your API
spec:
  envs: [prod]
  transport: {{baseUrl: https://api.example.invalid}}
  egressPolicy: {{dnsAllowlist: [api.example.invalid]}}
  auth: {{mode: none}}
  request: {{path: {mode.path}}}
  records: {mode.records}
  window: {mode.window}
{explain}
  pagination: {mode.pagination}
  rateLimit: {{maxRequestsPerMinute: 600}}
  partitions: {{cadence: daily, start: "2026-01-01T00:00:00Z"}}
  freshness: {{failAfterMinutes: 1800, warnAfterMinutes: 1560}}  # late after 30 h
variants:
  dev:  # a JSON merge patch over the document above: the sandbox on this machine
    spec:
      envs: [dev]
      transport: {{baseUrl: "http://localhost:{sandbox_port}"}}
      egressPolicy:
        dnsAllowlist: [localhost]
        allowedCidrs: [127.0.0.0/8, "::1/128"]  # loopback is refused unless allowed here
        allowedPorts: [{sandbox_port}]
"""

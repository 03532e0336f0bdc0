"""Runtime failures at the client boundary, each a leaf of the tree in `core/errors.py`.

A refusal maps to validation_failed (exit 4) and a missing secret to precondition_failed
(exit 3). httpx/httpcore exceptions never leave the guarded client: `http.py` maps them,
in one place, to the transport classes here (all transient), the way httpx maps
httpcore's. Messages name hosts, refs and reason codes, never a secret value.
"""

from __future__ import annotations

from enum import StrEnum

from ..core.errors import (
    ChartlyError,
    InvalidArgument,
    PreconditionFailed,
    UpstreamUnavailable,
    ValidationFailed,
)

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "DeadlineExceeded",
    "EgressRefused",
    "MalformedResponse",
    "Reason",
    "RecordingCorrupt",
    "RecordingMismatch",
    "RecordingNotFound",
    "ResponseTooLarge",
    "SecretInvalid",
    "SecretNotFound",
    "TransportFailure",
    "UnsupportedRecord",
    "UpstreamTimeout",
    "WorkerLost",
]


class Reason(StrEnum):
    """Stable reason codes: dashboards, tests and runbooks key on these strings."""

    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    INSECURE_SCHEME = "insecure_scheme"
    USERINFO_IN_URL = "userinfo_in_url"
    INVALID_URL = "invalid_url"
    INVALID_HOST = "invalid_host"
    NUMERIC_HOST = "numeric_host"
    IP_LITERAL_HOST = "ip_literal_host"
    HOST_NOT_ALLOWLISTED = "host_not_allowlisted"
    PORT_NOT_ALLOWED = "port_not_allowed"
    HEADER_NOT_ALLOWED = "header_not_allowed"
    ADDRESS_REFUSED = "address_refused"
    UNIX_SOCKET_REFUSED = "unix_socket_refused"
    REDIRECT_DOWNGRADE = "redirect_downgrade"
    REDIRECT_LOOP = "redirect_loop"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CROSS_ORIGIN_REDIRECT = "cross_origin_redirect"
    TLS_VERIFICATION_REQUIRED = "tls_verification_required"
    CIDR_NOT_PERMITTED = "cidr_not_permitted"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    RESPONSE_TOO_LARGE = "response_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    SECRET_NOT_FOUND = "secret_not_found"
    SECRET_INVALID = "secret_invalid"


class EgressRefused(ValidationFailed):
    """The egress guard refused a URL, header, redirect, address or TLS setting."""

    code = "egress_refused"

    def __init__(self, reason: Reason | str, message: str, *, category: str | None = None,
                 field: str | None = None) -> None:
        self.reason = Reason(reason)
        #: for `address_refused`: which table matched (`loopback`, `metadata`, `nat64`, ...)
        self.category = category
        super().__init__(f"egress refused ({self.reason.value}): {message}", field=field)

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        out["reason"] = self.reason.value
        if self.category:
            out["category"] = self.category
        return out


class ResponseTooLarge(ValidationFailed):
    """A response body grew past `transport.maxPayloadBytes` (counted after decoding)."""

    code = "response_too_large"
    reason = Reason.RESPONSE_TOO_LARGE


class TransportFailure(UpstreamUnavailable):
    """The HTTP exchange itself broke (no status to judge): transient, retried."""


class ConnectFailed(TransportFailure):
    """No connection: DNS lookup failed, connection refused, TLS handshake or certificate."""


class ConnectionLost(TransportFailure):
    """The connection broke mid-exchange: reset, peer closed before the whole body."""


class UpstreamTimeout(TransportFailure):
    """A connect, read, write or pool phase ran past its timeout (`transport.timeoutMs`)."""


class DeadlineExceeded(UpstreamTimeout):
    """One request, redirects and body included, ran past `transport.deadlineMs`."""

    code = "deadline_exceeded"
    reason = Reason.DEADLINE_EXCEEDED


class MalformedResponse(InvalidArgument):
    """A body that does not decode: bad gzip/deflate data, a truncated compressed stream,
    text that is not JSON (or nests past the parser's 1,024 levels).

    Retried, because a cut connection looks exactly like this; if every attempt gets the
    same, it is the upstream's data and fails as invalid_argument (exit 4).
    """

    code = "malformed_response"
    retryable = True


class UnsupportedRecord(InvalidArgument):
    """A record the envelope cannot hold as canonical JSON (nested past `MAX_RECORD_DEPTH`
    levels); refetching gives the same record, so it is never retried."""

    code = "unsupported_record"


class SecretNotFound(PreconditionFailed):
    """No provider holds the referenced secret; the message names the ref only."""

    code = "secret_not_found"
    reason = Reason.SECRET_NOT_FOUND


class SecretInvalid(ValidationFailed):
    """A resolved secret cannot be sent safely (line breaks in a header value, ':' in a user)."""

    code = "secret_invalid"
    reason = Reason.SECRET_INVALID


class RecordingNotFound(PreconditionFailed):
    """A replay names a folder that holds no recording of the window."""

    code = "recording_not_found"


class RecordingMismatch(ValidationFailed):
    """A recording of another plan, or a run that asks for other requests than it holds."""

    code = "recording_mismatch"


class RecordingCorrupt(ValidationFailed):
    """A recording whose bytes no longer match its hashes (the message names the page)."""

    code = "recording_corrupt"


class WorkerLost(ChartlyError):
    """A worker process fetching a window died (killed, out of memory) before the window
    ended. Not the upstream's fault and nothing a request retry fixes: the step resumes
    the window on a thread after its last staged page (and, were it to fail the step, a
    step retry would too)."""

    code = "worker_lost"
    platform_code = "unavailable"

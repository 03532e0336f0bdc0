"""The error taxonomy: every failure is a class with a stable code and an exit code.

Callers catch the class they mean; the CLI maps `exit_code` straight to the process
status, so the failure table of docs/contract.md#exit-codes lives here and nowhere else.
Whether a failure is retried is a property of its class (`retryable`), never of its
message. The whole tree (leaves marked `runtime` live in `runtime/errors.py`, next to the
client that raises them)::

    ChartlyError                            code                     exit retry
    ├── UsageError                          usage_error              2
    │   └── RefSyntaxError                  invalid_ref              2
    ├── PreconditionFailed                  precondition_failed      3
    │   ├── ProfileNotFound                 profile_not_found        3
    │   ├── RecordingNotFound (runtime)     recording_not_found      3
    │   └── SecretNotFound (runtime)        secret_not_found         3
    ├── ValidationFailed                    validation_failed        4
    │   ├── ProfileInvalid                  profile_invalid          4
    │   ├── PaginationViolation             pagination_violation     4
    │   │   ├── IncompleteWindow            incomplete_window        4          total not met
    │   │   └── PossiblyTruncated           possibly_truncated       4          no explicit end
    │   ├── ProfileMismatch                 profile_mismatch         4          profile vs upstream
    │   ├── EgressRefused (runtime)         egress_refused           4
    │   ├── RecordingCorrupt (runtime)      recording_corrupt        4
    │   ├── RecordingMismatch (runtime)     recording_mismatch       4
    │   ├── ResponseTooLarge (runtime)      response_too_large       4
    │   └── SecretInvalid (runtime)         secret_invalid           4
    ├── UnsafeOperationBlocked              unsafe_operation_blocked 5
    ├── WorkerLost (runtime)                worker_lost              1          worker died
    └── UpstreamError                       (+ status, Retry-After)
        ├── UpstreamUnavailable             unavailable              1    yes   5xx, 408, 425
        │   └── TransportFailure (runtime)  unavailable              1    yes   exchange broke
        │       ├── ConnectFailed           unavailable              1    yes   DNS, refused, TLS
        │       ├── ConnectionLost          unavailable              1    yes   reset, peer closed
        │       └── UpstreamTimeout         unavailable              1    yes   a phase timed out
        │           └── DeadlineExceeded    deadline_exceeded        1    yes   deadlineMs
        ├── RateLimited                     rate_limited             4    yes   429
        ├── InvalidArgument                 invalid_argument         4          other 4xx, bad data
        │   ├── MalformedResponse (runtime) malformed_response       4    yes   body won't decode
        │   └── UnsupportedRecord (runtime) unsupported_record       4          too deep to store
        ├── Unauthenticated                 unauthenticated          4          401
        └── PermissionDenied                permission_denied        4          403
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the connector-tester contract (docs/contract.md#exit-codes)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PRECONDITION_FAILED = 3
    VALIDATION_FAILED = 4
    UNSAFE_BLOCKED = 5


def _restore(cls: type[ChartlyError], message: str, state: dict[str, Any]) -> ChartlyError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ChartlyError(Exception):
    """Base error: a stable `code`, an exit code and a message that never holds a secret."""

    code: str = "error"
    exit_code: ExitCode = ExitCode.ERROR
    #: platform code (`unavailable`, `rate_limited`, ...; docs/contract.md#retry) if any
    platform_code: str | None = None
    #: whether the retry loop may try the request again (within the window's budget)
    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with every attribute (`field`, `status`, `retry_after`, ...), not only the
        message: a window fetched in a worker process hands its error back this way."""
        return (_restore, (type(self), self.message, dict(self.__dict__)))

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class UsageError(ChartlyError):
    """Invalid arguments: a flag or ref that does not parse."""

    code = "usage_error"
    exit_code = ExitCode.USAGE


class RefSyntaxError(UsageError):
    """A profile ref that does not follow `namespace::connector/name@version[#variant]`."""

    code = "invalid_ref"


class PreconditionFailed(ChartlyError):
    """A required input is missing: unknown ref, variant, env or secret."""

    code = "precondition_failed"
    exit_code = ExitCode.PRECONDITION_FAILED


class ProfileNotFound(PreconditionFailed):
    code = "profile_not_found"


class ValidationFailed(ChartlyError):
    """A contract violation: schema, golden mismatch, egress, auth, rate limit."""

    code = "validation_failed"
    exit_code = ExitCode.VALIDATION_FAILED


class ProfileInvalid(ValidationFailed):
    """A profile file that fails schema validation; `errors` lists each (path, field, message)."""

    code = "profile_invalid"

    def __init__(self, message: str, *, errors: list[dict[str, str]] | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.errors = errors or []


class UnsafeOperationBlocked(ChartlyError):
    """A safety gate: run without --apply, network in plan, a tenant/env that may not run it."""

    code = "unsafe_operation_blocked"
    exit_code = ExitCode.UNSAFE_BLOCKED


class UpstreamError(ChartlyError):
    """A failure reported by, or on the way to, the upstream API (docs/contract.md#retry)."""

    retry_class: str = "permanent"

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        out["retry_class"] = self.retry_class
        if self.platform_code:
            out["platform_code"] = self.platform_code
        if self.status is not None:
            out["status"] = str(self.status)
        if self.retry_after is not None:
            out["retry_after_seconds"] = f"{self.retry_after:.3f}"
        return out


class UpstreamUnavailable(UpstreamError):
    """Transient: network errors and 5xx, retried with bounded backoff until the budget ends."""

    code = "unavailable"
    platform_code = "unavailable"
    retry_class = "transient"
    retryable = True


class RateLimited(UpstreamError):
    """Throttled: 429 or our own rate budget; carries Retry-After when known. Exit 4."""

    code = "rate_limited"
    platform_code = "rate_limited"
    retry_class = "throttled"
    retryable = True
    exit_code = ExitCode.VALIDATION_FAILED


class InvalidArgument(UpstreamError):
    """Permanent: other 4xx, or data that breaks the contract (bad JSON, missing id). Exit 4."""

    code = "invalid_argument"
    platform_code = "invalid_argument"
    exit_code = ExitCode.VALIDATION_FAILED


class Unauthenticated(UpstreamError):
    """401 from the upstream: invalid auth configuration, never retried. Exit 4."""

    code = "unauthenticated"
    platform_code = "unauthenticated"
    retry_class = "auth"
    exit_code = ExitCode.VALIDATION_FAILED


class PermissionDenied(UpstreamError):
    """403 from the upstream: never retried. Exit 4."""

    code = "permission_denied"
    platform_code = "permission_denied"
    retry_class = "auth"
    exit_code = ExitCode.VALIDATION_FAILED


class PaginationViolation(ValidationFailed):
    """A pagination invariant broke: repeated cursor, page past the total, duplicate id."""

    code = "pagination_violation"


class IncompleteWindow(PaginationViolation):
    """The records fetched differ from the total the upstream declared for the window."""

    code = "incomplete_window"


class PossiblyTruncated(PaginationViolation):
    """A window stopped on a full page without an explicit end: records may be missing."""

    code = "possibly_truncated"


class ProfileMismatch(ValidationFailed):
    """The profile does not describe what the upstream returns (a continuation field it never
    sends, records that are not objects): a profile fix, never retried, never a finding."""

    code = "profile_mismatch"

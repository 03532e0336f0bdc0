"""`doctor` (docs/contract.md#doctor): one guarded probe, a health category, latency, and
a redacted message.

The probe is the profile's own first request for the first hour of its partitions, so it
exercises the real path, auth and egress policy without fetching a window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ..core.catalog import ResolvedProfile
from ..core.errors import ChartlyError, ExitCode, PreconditionFailed
from ..core.plan import Limits, build_plan
from ..core.windows import Window
from .egress import EnvPolicy
from .errors import ConnectFailed, EgressRefused, TransportFailure, UpstreamTimeout
from .http import build_client
from .secrets import SecretResolver

CATEGORY_EXIT = {"ok": ExitCode.OK, "auth": ExitCode.VALIDATION_FAILED,
                 "permission": ExitCode.VALIDATION_FAILED, "timeout": ExitCode.ERROR,
                 "network": ExitCode.ERROR, "unknown": ExitCode.ERROR}


@dataclass(frozen=True)
class DoctorReport:
    ok: bool
    category: str
    latency_ms: float | None
    message: str
    status: int | None = None
    reason: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.reason is not None:  # an egress refusal is a policy violation (exit 4)
            return ExitCode.VALIDATION_FAILED
        return CATEGORY_EXIT[self.category]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "category": self.category, "latency_ms": self.latency_ms,
                "message": self.message, "status": self.status, "reason": self.reason}


def probe_window(resolved: ResolvedProfile) -> Window:
    start = resolved.spec.partitions.start
    return Window(start, start + timedelta(hours=1))


def _category(status: int) -> tuple[str, str]:
    if 200 <= status < 300:
        return "ok", "connection successful"
    if status == 401:
        return "auth", "credentials rejected (HTTP 401)"
    if status == 403:
        return "permission", "access denied (HTTP 403)"
    if status in (408, 504):
        return "timeout", f"upstream timed out (HTTP {status})"
    return "unknown", f"unexpected HTTP {status}"


def _network_message(exc: TransportFailure, url: str) -> str:
    """Name the host and port that failed: the first thing to check is what listens there."""
    parts = urlsplit(url)
    target = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen and not isinstance(
            cause, ConnectionRefusedError):
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {target} (is the API running and listening there?)"
    if isinstance(exc, ConnectFailed):
        return f"cannot connect to {target} ({exc.__class__.__name__})"
    return f"network error talking to {target} ({exc.__class__.__name__})"


def run_doctor(resolved: ResolvedProfile, *, env: str, secrets: SecretResolver | None,
               env_policy: EnvPolicy | None = None, window: Window | None = None,
               **client_options: Any) -> DoctorReport:
    """Probe once (for `window`, else the profile's first hour); missing secrets still raise
    (exit 3): they are a setup error, not health."""
    plan = build_plan(resolved, window or probe_window(resolved), Limits(max_pages=1))
    step = plan.steps[0]
    auth = resolved.spec.auth
    params = {k: v for k, v in step["params"].items() if k != auth.credential_param()}
    started = time.monotonic()
    try:
        with build_client(resolved, env=env, secrets=secrets, env_policy=env_policy,
                          **client_options) as client:
            response = client.get(step["url"], params)
    except PreconditionFailed:
        raise
    except EgressRefused as exc:
        return DoctorReport(False, "network", None, exc.message, reason=exc.reason.value)
    except UpstreamTimeout as exc:
        return DoctorReport(False, "timeout", None, f"timed out: {exc.__class__.__name__}")
    except TransportFailure as exc:
        return DoctorReport(False, "network", None, _network_message(exc, step["url"]))
    except ChartlyError as exc:
        return DoctorReport(False, "unknown", None, f"{exc.code}: {exc.message}")
    latency = round((time.monotonic() - started) * 1000, 2)
    category, message = _category(response.status_code)
    return DoctorReport(category == "ok", category, latency, message,
                        status=response.status_code)

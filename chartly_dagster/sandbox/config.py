"""What a sandbox serves: seed, per-endpoint rates, auth, forbidden paths and the fault plan.

The config object is shared with the running server and read on every request, so a test
can change auth, rates or faults mid-run without restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .data import ENDPOINTS, MAX_EVENTS_PER_HOUR, Stream
from .faults import ME_PATH, FaultPlan

SandboxAuth = (
    tuple[Literal["bearer"], str]
    | tuple[Literal["api_key_header"], str, str]
    | tuple[Literal["api_key_query"], str, str]
    | tuple[Literal["basic"], str, str]
)
_AUTH_ARITY = {"bearer": 2, "api_key_header": 3, "api_key_query": 3, "basic": 3}


def check_auth_spec(auth: SandboxAuth | None) -> None:
    """Reject an auth tuple of the wrong shape (the message never echoes the credential)."""
    if auth is None:
        return
    if (not isinstance(auth, tuple) or not auth or auth[0] not in _AUTH_ARITY
            or len(auth) != _AUTH_ARITY[auth[0]]
            or not all(isinstance(part, str) and part for part in auth)):
        mode = auth[0] if isinstance(auth, tuple) and auth else None
        raise ValueError(f"auth must be ('bearer', token), ('api_key_header', header, key), "
                         f"('api_key_query', param, key) or ('basic', user, password); "
                         f"got mode {mode!r}")


@dataclass
class SandboxConfig:
    """Data and behaviour of one sandbox; `faults` is the live, thread-safe fault plan."""

    seed: int = 0
    events_per_hour: int = 60
    #: per-endpoint override of `events_per_hour`, keyed by path (e.g. "/v1/events")
    rates: dict[str, int] = field(default_factory=dict)
    auth: SandboxAuth | None = None
    #: per-path override of `auth` (None: that path is open), so one sandbox can serve
    #: profiles that each authenticate differently
    endpoint_auth: dict[str, SandboxAuth | None] = field(default_factory=dict)
    #: paths that answer 403 even to valid credentials (a key without that scope)
    forbidden: set[str] = field(default_factory=set)
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        for auth in (self.auth, *self.endpoint_auth.values()):
            check_auth_spec(auth)
        unknown = set(self.rates) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"rates for unknown endpoints {sorted(unknown)}")
        unknown = set(self.endpoint_auth) - set(ENDPOINTS) - {ME_PATH}
        if unknown:
            raise ValueError(f"endpoint_auth for unknown endpoints {sorted(unknown)}")
        for rate in (self.events_per_hour, *self.rates.values()):
            if not 1 <= rate <= MAX_EVENTS_PER_HOUR:
                raise ValueError(f"events per hour must be 1..{MAX_EVENTS_PER_HOUR}, not {rate}")

    def auth_for(self, path: str) -> SandboxAuth | None:
        """The credential `path` requires (None: no auth)."""
        return self.endpoint_auth[path] if path in self.endpoint_auth else self.auth

    def query_credential_params(self) -> set[str]:
        """Query parameters that carry an API key somewhere, to redact from the request log."""
        return {auth[1] for auth in (self.auth, *self.endpoint_auth.values())
                if auth is not None and auth[0] == "api_key_query"}

    def stream(self, path: str) -> Stream:
        """The event stream `path` serves under the current seed and rate."""
        return Stream(path, self.seed, self.rates.get(path, self.events_per_hour))

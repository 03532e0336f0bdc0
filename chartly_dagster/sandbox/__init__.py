"""A local upstream API with deterministic data and fault injection (demo, tests, benches).

Standard library plus orjson only: it must run wherever the tests run, and it never
imports the runtime it is used to test.
"""

from .config import SandboxAuth, SandboxConfig
from .data import ENDPOINTS
from .faults import FAULT_KINDS, Fault, FaultKind, FaultPlan
from .server import Sandbox, run_sandbox, start_sandbox

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Sandbox",
    "SandboxAuth",
    "SandboxConfig",
    "run_sandbox",
    "start_sandbox",
]

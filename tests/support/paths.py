"""The repository's own folders, named once for every test and helper."""

from __future__ import annotations

from pathlib import Path

#: the repository root (this file is tests/support/paths.py)
REPO = Path(__file__).resolve().parents[2]
#: the shipped profiles and their golden plans
PROFILES = REPO / "profiles"
GOLDEN = REPO / "golden"

"""Flags and look-ups shared by every command that reads profiles."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core.catalog import ProfileCatalog

PROFILES_ENV = "CHARTLY_PROFILES_DIR"


def add_profiles_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles-dir", metavar="PATH",
        help=f"profiles folder (default: ${PROFILES_ENV}, else profiles/ of the current project)")


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("json", "text"), default="json",
                        help="output format (JSON is canonical)")


def profiles_dir(explicit: str | None) -> Path:
    """`--profiles-dir`, else $CHARTLY_PROFILES_DIR, else the nearest project's `profiles/`."""
    if explicit:
        return Path(explicit)
    if os.environ.get(PROFILES_ENV):
        return Path(os.environ[PROFILES_ENV])
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "profiles").is_dir() and any(
                (folder / marker).exists() for marker in ("pyproject.toml", "workspace.yaml")):
            return folder / "profiles"
    return here / "profiles"


def load_catalog(explicit: str | None) -> ProfileCatalog:
    """Load the profiles tree; any broken file fails the command with every problem listed."""
    catalog = ProfileCatalog.load(profiles_dir(explicit))
    catalog.raise_for_issues()
    return catalog


def project_root(catalog: ProfileCatalog) -> Path:
    """Golden paths in profiles are relative to the folder that holds `profiles/`."""
    return catalog.root.resolve().parent

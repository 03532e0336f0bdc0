"""`python -m chartly_dagster.integration.reap`: the run liveness sensor's work, at once.

For an operator who cannot wait for the daemon's next tick (or runs no daemon): fails the
runs whose worker process on this host is gone and frees the connector pool slots they,
and runs that already ended, still hold. The instance is the one DAGSTER_HOME names. It
lives in the Dagster layer, not in `chartly-tool`, whose CLI imports only core/runtime.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dagster import DagsterInstance

from .liveness import reap_dead_runs


def main(argv: Sequence[str] | None = None) -> int:
    """Print what was found for each run; exit 0, or 3 when the instance cannot be opened."""
    parser = argparse.ArgumentParser(
        prog="python -m chartly_dagster.integration.reap",
        description="Fail runs whose worker process on this host is gone and free the "
                    "connector pool slots they hold (the instance is $DAGSTER_HOME).")
    parser.add_argument("--dry-run", action="store_true",
                        help="only report what would be done")
    args = parser.parse_args(argv)
    home = os.environ.get("DAGSTER_HOME", "")
    if not home or not Path(home).is_dir():
        print("error: DAGSTER_HOME must name the instance folder (the one holding "
              "dagster.yaml)", file=sys.stderr)
        return 3
    try:
        with DagsterInstance.get() as instance:
            verdicts = reap_dead_runs(instance, dry_run=args.dry_run)
    except Exception as exc:  # a broken instance config or unreachable storage
        # the type only: a storage error's text may carry connection details
        print(f"error: the Dagster instance at DAGSTER_HOME={home} could not be read or "
              f"updated ({type(exc).__name__})", file=sys.stderr)
        return 3
    for verdict in verdicts:
        print(verdict.describe())
    if not verdicts:
        print("no STARTED run and no slot held by an ended run")
    return 0


if __name__ == "__main__":
    sys.exit(main())

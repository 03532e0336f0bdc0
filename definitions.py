"""Dagster code location: every profile under profiles/ as a partitioned asset.

`CHARTLY_ENV` picks which resolved profiles (dev/staging/prod variants) this deployment
runs; `CHARTLY_PROFILES_DIR` another profiles folder (as for `chartly-tool`). Secrets come
from `CHARTLY_SECRET_<NAME>_<KEY>` variables or the folder named by `CHARTLY_SECRETS_DIR`
(configured by variable name only, so the UI never shows it; unset means no folder). Each
daily project also gets the example summary from examples/.
"""

import os
from pathlib import Path

from chartly_dagster.integration import ChartlyResource, build_definitions
from examples.summary import daily_summaries

defs = build_definitions(
    os.environ.get("CHARTLY_PROFILES_DIR") or Path(__file__).resolve().parent / "profiles",
    resource=ChartlyResource(env=os.environ.get("CHARTLY_ENV", "dev")),
    downstream=daily_summaries,
)

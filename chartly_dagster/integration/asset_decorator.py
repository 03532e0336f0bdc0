"""`@chartly_assets`: one connector profile as a partitioned asset whose body the user writes.

Shaped like `@dlt_assets`/`@sling_assets`: the translator decides the spec, the profile and
translator ride on the spec's metadata, and the body hands the work to the resource:

    @chartly_assets(profile=resolved)
    def orders(context: AssetExecutionContext, chartly: ChartlyResource):
        yield from chartly.fetch(context)

Assets return `MaterializeResult` and write their Parquet files themselves, because no IO
manager can store one output that covers several partitions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from dagster import AssetsDefinition, BackfillPolicy, BetaWarning, multi_asset

from ..core.catalog import ResolvedProfile
from . import metadata as md
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData


def backfill_policy_for(max_partitions_per_run: int | None) -> BackfillPolicy:
    """A range is one run (None, the default), or runs of at most `max_partitions_per_run`.

    One run per range is what `dagster asset materialize --partition-range` requires and
    what dagster-dlt does for time-window partitions. Backfill policies are a beta API;
    the warning is silenced on purpose.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        if max_partitions_per_run is None:
            return BackfillPolicy.single_run()
        return BackfillPolicy.multi_run(max_partitions_per_run)


def chartly_assets(*, profile: ResolvedProfile,
                   translator: ConnectorProfileTranslator | None = None,
                   env: str | None = None, name: str | None = None,
                   max_partitions_per_run: int | None = None,
                   ) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Decorate a function into the asset of one resolved profile.

    `env` is only what the translator shows (the `chartly/env` tag); the run's env is the
    resource's. `max_partitions_per_run` bounds a backfill run (None: one run per range).
    The step runs in the translator's concurrency pool (one per connector by default).
    """
    translator = translator or ConnectorProfileTranslator()
    data = ConnectorProfileTranslatorData(profile, env or profile.spec.envs[0])
    spec = translator.get_asset_spec(data)
    if spec.partitions_def is None:
        raise ValueError(f"translator returned no partitions_def for {spec.key.to_user_string()}")
    spec = spec.merge_attributes(metadata={md.META_KEY_PROFILE: profile,
                                           md.META_KEY_TRANSLATOR: translator})

    def decorate(fn: Callable[..., Any]) -> AssetsDefinition:
        with warnings.catch_warnings():  # backfill_policy is a beta parameter
            warnings.simplefilter("ignore", BetaWarning)
            return multi_asset(specs=[spec], name=name or spec.key.to_python_identifier(),
                               backfill_policy=backfill_policy_for(max_partitions_per_run),
                               pool=translator.get_pool(data))(fn)

    return decorate

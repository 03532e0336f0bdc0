"""The few Dagster internals this integration needs, imported in one place.

Dagster does not export these names publicly (run tags that carry a run's partitions, the
type `define_asset_job` returns, what a per-partition check evaluation points at, the job
type Dagster's multiprocess executor requires); when a Dagster upgrade moves one, this
module is the only file to change.
"""

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "PARTITION_NAME_TAG",
    "AssetCheckEvaluationTargetMaterializationData",
    "ReconstructableJob",
    "UnresolvedAssetJobDefinition",
]

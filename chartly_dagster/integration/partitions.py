"""A profile's explicit time windows as a Dagster partitions definition, and back.

Partitions are the design's windows: a partition key maps to exactly one `[start, end)` in
UTC, computed by Dagster from the profile's cadence, start and time zone, so the UI, the
schedules and the fetch all agree on where a window begins.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from ..core.profile import PartitionsSpec
from ..core.windows import Window

DAILY_FMT = "%Y-%m-%d"
HOURLY_FMT = "%Y-%m-%d-%H:%M"


def _local_start(spec: PartitionsSpec) -> datetime:
    """The first window start seen in the partition time zone (Dagster reads it there)."""
    return spec.start.astimezone(ZoneInfo(spec.timezone))


def partitions_def_for(spec: PartitionsSpec) -> TimeWindowPartitionsDefinition:
    """Daily/hourly/weekly/custom-cron windows from `spec.partitions`; only completed ones."""
    start = _local_start(spec)
    # Offsets keep windows aligned to the profile's own start (06:00 days, Monday weeks).
    common = {"timezone": spec.timezone, "end_offset": spec.end_offset,
              "minute_offset": start.minute}
    if spec.cadence == "daily":
        return DailyPartitionsDefinition(start_date=start.strftime(HOURLY_FMT), fmt=DAILY_FMT,
                                         hour_offset=start.hour, **common)
    if spec.cadence == "hourly":
        return HourlyPartitionsDefinition(start_date=start.strftime(HOURLY_FMT), **common)
    if spec.cadence == "weekly":
        return WeeklyPartitionsDefinition(start_date=start.strftime(HOURLY_FMT), fmt=DAILY_FMT,
                                          hour_offset=start.hour,
                                          day_offset=(start.weekday() + 1) % 7, **common)
    # custom: minute resolution, because a cron may start windows off the hour.
    return TimeWindowPartitionsDefinition(cron_schedule=str(spec.cron), start=start.strftime(
        HOURLY_FMT), fmt=HOURLY_FMT, timezone=spec.timezone, end_offset=spec.end_offset)


def window_for_partition(partitions_def: PartitionsDefinition, partition_key: str) -> Window:
    """The UTC window `[start, end)` one partition key stands for."""
    if not isinstance(partitions_def, TimeWindowPartitionsDefinition):
        raise TypeError(f"chartly assets need time-window partitions, got "
                        f"{type(partitions_def).__name__}")
    span = partitions_def.time_window_for_partition_key(partition_key)
    return Window(span.start, span.end)


def previous_partition_key(partitions_def: PartitionsDefinition, partition_key: str) -> str | None:
    """The window right before this one (None for the first), whose watermark this one follows."""
    if not isinstance(partitions_def, TimeWindowPartitionsDefinition):
        return None
    start = partitions_def.start_time_for_partition_key(partition_key)
    previous = partitions_def.get_prev_partition_window(start)
    if previous is None:
        return None
    return partitions_def.get_partition_key_for_timestamp(previous.start.timestamp())

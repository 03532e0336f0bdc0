"""chartly-dagster: governed HTTP connector profiles as partitioned, checked Dagster assets."""

__version__ = "0.1.0"

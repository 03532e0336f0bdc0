"""Dagster code location: every profile under profiles/ as a partitioned asset."""

"""Examples built on chartly_dagster's public API: a downstream summary asset and the demo."""

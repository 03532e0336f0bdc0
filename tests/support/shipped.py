"""Names of the shipped demo profiles' Dagster objects, named once for every test."""

from __future__ import annotations

from dagster import AssetKey

#: the sales project's orders connector (profiles/sales/orders.yaml) and what it becomes
ORDERS = AssetKey(["tenant-demo", "proj-sales", "orders"])
ORDERS_TYPED = AssetKey(["tenant-demo", "proj-sales", "orders_typed"])
ORDERS_JOB = "tenant_demo__proj_sales__orders_job"
#: the sandbox endpoint the orders profile reads
ORDERS_PATH = "/v2/orders"
#: the sales project's job and the example summary downstream of it
SALES_JOB = "tenant_demo__proj_sales"
SALES_SUMMARY = AssetKey(["tenant-demo", "proj-sales", "daily_summary"])

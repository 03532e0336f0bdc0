"""Sandbox upstream fixtures (filled in by the runtime work)."""

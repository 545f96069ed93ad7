"""Tenants, API keys, roles."""

"""Usage metering (and, later, price plans, quotas and invoices)."""

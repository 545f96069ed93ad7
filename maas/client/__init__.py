"""Python SDK for the MaaS native API (over HTTP only)."""

from maas.client.client import Client, MaasAPIError

__all__ = ["Client", "MaasAPIError"]

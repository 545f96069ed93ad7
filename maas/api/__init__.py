"""The HTTP layer: app factory, auth dependencies, error mapping, one folder per wire protocol."""

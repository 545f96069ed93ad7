"""Models, versions and aliases."""

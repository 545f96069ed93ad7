"""Datasets: tabular formats (``formats``), column profiles (``profile``) and the dataset service."""

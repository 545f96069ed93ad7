"""Durable training jobs: the DB table is the queue; workers are subprocesses."""

"""Repositories: SQL for one aggregate each, bound to the unit of work's connection."""

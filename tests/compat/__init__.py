"""Seed surface adapters (issue 4): golden and end-to-end tests per surface."""

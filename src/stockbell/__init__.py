"""Stockbell: self-hosted back-in-stock notifications and inventory webhooks."""

__version__ = "0.1.0"

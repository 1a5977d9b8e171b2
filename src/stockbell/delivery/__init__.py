"""Outbound webhooks: formats, signing, the SSRF guard, the sender and the dispatcher."""

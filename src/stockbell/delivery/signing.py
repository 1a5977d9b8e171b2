"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks.webhooks import Webhook


def signature_header(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """Space-separated `v1,<base64>` signatures, one per active secret (rotation overlap)."""
    return " ".join(Webhook(s).sign(msg_id, timestamp, body) for s in secrets)


def standard_headers(secrets: list[str], msg_id: str, timestamp: datetime,
                     body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }

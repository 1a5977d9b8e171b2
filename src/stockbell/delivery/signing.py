"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature).

The same bytes as `standardwebhooks.Webhook(secret).sign(...)` (tests check it against the
package's verifier), computed directly: the secret is decoded once, not once per request.
"""

from __future__ import annotations

import base64
import hmac
import math
from datetime import UTC, datetime
from functools import lru_cache

PREFIX = "whsec_"


@lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret, as standardwebhooks decodes it."""
    raw = secret[len(PREFIX):] if secret.startswith(PREFIX) else secret
    key = base64.b64decode(raw + "==")  # tolerate unpadded base64, like the package
    if not key:
        raise ValueError("webhook secret may not be empty")
    return key


def signature_header(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """Space-separated `v1,<base64>` signatures, one per active secret (rotation overlap)."""
    seconds = math.floor(timestamp.replace(tzinfo=UTC).timestamp())  # as standardwebhooks
    signed = f"{msg_id}.{seconds}.{body}".encode()
    return " ".join("v1," + base64.b64encode(hmac.digest(_key(s), signed, "sha256")).decode()
                    for s in secrets)


def standard_headers(secrets: list[str], msg_id: str, timestamp: datetime,
                     body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }

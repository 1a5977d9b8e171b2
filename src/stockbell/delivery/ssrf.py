"""Refuse webhook targets on private, loopback, link-local, CGNAT and metadata addresses.

Names are checked after resolution by the resolver the connector uses, so the address the
socket connects to is the address that was checked (no DNS-rebinding gap); IP literals,
which aiohttp does not resolve, are checked before the request.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from stockbell.domain.errors import InvalidInput
from stockbell.domain.webhooks import address_allowed

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class BlockedAddressError(OSError):
    pass


def literal_host(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_url(url: str, allow: Networks) -> None:
    """Static checks at endpoint creation: scheme, host, and IP-literal hosts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url must be http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidInput("url must name a host", field="url")
    ip = literal_host(parts.hostname)
    if ip is not None and not address_allowed(ip, allow):
        raise InvalidInput(f"url points at a non-public address ({ip}); the operator can "
                           "allow it with STOCKBELL_WEBHOOK_ALLOW", field="url")
    if (parts.hostname.lower() in ("localhost", "metadata.google.internal") \
            or parts.hostname.lower().endswith(".localhost")) and not allow:
        raise InvalidInput("url points at a local host name", field="url")


async def check_resolves_public(url: str, allow: Networks) -> None:
    """At endpoint creation: a name that resolves only to blocked addresses is refused."""
    host = urlsplit(url).hostname or ""
    if literal_host(host) is not None:
        return
    try:
        infos = await GuardedResolver(allow).resolve(host, 0, socket.AF_UNSPEC)
    except BlockedAddressError as exc:
        raise InvalidInput(str(exc), field="url") from None
    except OSError:
        return  # unresolvable today is not forbidden; delivery will retry
    if not infos:
        raise InvalidInput("url resolves to no address", field="url")


class GuardedResolver(ThreadedResolver):
    def __init__(self, allow: Networks) -> None:
        super().__init__()
        self.allow = allow

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        ok = [r for r in found if address_allowed(r["host"], self.allow)]
        if not ok:
            addrs = ", ".join(sorted({r["host"] for r in found}))
            raise BlockedAddressError(
                f"{host} resolves to non-public addresses ({addrs}); allow them with "
                "STOCKBELL_WEBHOOK_ALLOW"
            )
        return ok

"""Webhook rules without a database: what counts as success, the retry policy, endpoint
health, signing, and the SSRF guard (pure address checks, then the resolver and the sender
against a real listener on loopback)."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from stockbell.config import Settings
from stockbell.delivery.sender import EXCERPT, WATCH_EVERY, Sender, Timeouts, _retry_after
from stockbell.delivery.signing import standard_headers
from stockbell.delivery.ssrf import BlockedAddressError, GuardedResolver, Networks, check_url
from stockbell.domain.errors import InvalidInput
from stockbell.domain.webhooks import (
    DEFAULT_SCHEDULE,
    FORMATS,
    MAX_RETRY_AFTER,
    Endpoint,
    RetryPolicy,
    Verdict,
    address_allowed,
    judge,
    parse_allow_list,
    should_disable,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LOOPBACK = parse_allow_list("127.0.0.0/8")

# --------------------------------------------------------------------------- judge


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert judge(status) is Verdict.SUCCESS


@pytest.mark.parametrize("status", [None, 100, 199, 300, 301, 302, 303, 304, 307, 308, 400,
                                    401, 404, 408, 409, 429, 500, 502, 503, 504])
def test_everything_else_is_retried_3xx_included(status: int | None) -> None:
    assert judge(status) is Verdict.RETRY


def test_410_gone_is_its_own_verdict() -> None:
    assert judge(410) is Verdict.GONE


# --------------------------------------------------------------------------- retry policy


def test_default_schedule_is_the_documented_one() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert RetryPolicy().max_attempts == 8
    # the setting's default says the same thing
    default = Settings.model_fields["retry_schedule"].default
    assert RetryPolicy.parse(default).schedule == DEFAULT_SCHEDULE


def test_schedule_length_is_the_number_of_attempts() -> None:
    policy = RetryPolicy.parse("0, 0.2,0.2 ,0.2")
    assert policy.schedule == (0.0, 0.2, 0.2, 0.2)
    assert policy.max_attempts == 4
    rng = random.Random(1)
    assert [policy.next_delay(n, rng=rng) is None for n in range(1, 6)] == \
        [False, False, False, True, True]


@pytest.mark.parametrize("made", range(1, 8))
def test_jitter_stays_within_ten_percent_above_the_schedule(made: int) -> None:
    policy = RetryPolicy()
    base = DEFAULT_SCHEDULE[made]
    rng = random.Random(made)
    delays = [policy.next_delay(made, rng=rng) for _ in range(500)]
    assert all(d is not None and base <= d <= base * 1.1 for d in delays)
    assert len(set(delays)) > 1  # there is jitter: retries of many deliveries spread out
    assert max(d for d in delays if d is not None) > base * 1.05


def test_zero_delay_has_no_jitter() -> None:
    assert RetryPolicy((0.0, 0.0)).next_delay(1) == 0.0
    assert RetryPolicy().next_delay(0) == 0.0


def test_no_delay_after_the_last_attempt_even_with_retry_after() -> None:
    assert RetryPolicy().next_delay(8) is None
    assert RetryPolicy().next_delay(8, retry_after=1) is None
    assert RetryPolicy((0.0,)).next_delay(1) is None


def test_retry_after_lengthens_but_never_shortens_the_wait() -> None:
    policy = RetryPolicy((0.0, 5.0, 300.0), jitter=0.0)
    assert policy.next_delay(1, retry_after=60) == 60
    assert policy.next_delay(2, retry_after=1) == 300


def test_retry_after_is_bounded() -> None:
    policy = RetryPolicy((0.0, 5.0), jitter=0.0)
    assert policy.next_delay(1, retry_after=7 * 24 * 3600) == MAX_RETRY_AFTER
    jittered = RetryPolicy((0.0, 5.0)).next_delay(1, retry_after=1e12,
                                                  rng=random.Random(3))
    assert jittered is not None
    assert MAX_RETRY_AFTER <= jittered <= MAX_RETRY_AFTER * 1.1


@pytest.mark.parametrize("text", ["", " , ", "1,-1", "a,b", "5;10"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - parse raises plain ValueError
        RetryPolicy.parse(text)


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5), ("soon", None), ("", None),
    (None, None),
])
def test_retry_after_header_parsing(value: str | None, expected: float | None) -> None:
    assert _retry_after(value, NOW) == expected


def test_retry_after_http_date() -> None:
    assert _retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert _retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0


# --------------------------------------------------------------------------- endpoint health


def test_should_disable_after_the_span() -> None:
    span = timedelta(days=5)
    assert not should_disable(None, NOW, span)
    assert not should_disable(NOW - span + timedelta(seconds=1), NOW, span)
    assert should_disable(NOW - span, NOW, span)
    assert should_disable(NOW - span * 2, NOW, span)


def test_endpoint_filters_and_enabled_flag() -> None:
    every = Endpoint("we_1", "https://example.com/", "whsec_x")
    restocks = Endpoint("we_2", "https://example.com/", "whsec_x", event_types=["back_in_stock"])
    off = Endpoint("we_3", "https://example.com/", "whsec_x", enabled=False)
    assert every.accepts("inventory.count.updated")
    assert every.accepts("endpoint.recovered")
    assert restocks.accepts("back_in_stock")
    assert not restocks.accepts("inventory.count.updated")
    assert not off.accepts("back_in_stock")


@given(origin=st.sampled_from([None, "ti", "sequenzy", "commercelayer", "native", ""]),
       change=st.sampled_from([None, "activated", "threshold"]),
       reference=st.one_of(st.none(), st.text(max_size=8)))
def test_a_back_in_stock_event_is_taken_or_not_by_its_reference_origin_alone(
        origin: str | None, change: str | None, reference: str | None) -> None:
    """service/outbox.py decides which endpoints take a database-rendered back_in_stock
    event from its subscription's reference_origin, without the rest of its data."""
    full = {"subscription_id": "bis_1", "change": change,
            "subscription": {"id": "bis_1", "status": "notified", "reference": reference,
                             "reference_origin": origin, "metadata": {"origin": "ti"}},
            "item": {"sku_code": "ti"}, "availability": "2", "threshold": "1"}
    for fmt in FORMATS:
        ep = Endpoint("we_1", "https://example.com/", "whsec_x", format=fmt)
        assert ep.accepts("back_in_stock", full) == \
            ep.accepts("back_in_stock", {"subscription": {"reference_origin": origin}})


def test_both_secrets_sign_during_a_rotation_only() -> None:
    ep = Endpoint("we_1", "https://example.com/", "whsec_new", previous_secret="whsec_old",
                  previous_secret_expires_at=NOW + timedelta(hours=24))
    assert ep.signing_secrets(NOW) == ["whsec_new", "whsec_old"]
    assert ep.signing_secrets(NOW + timedelta(hours=23, minutes=59)) == \
        ["whsec_new", "whsec_old"]
    assert ep.signing_secrets(NOW + timedelta(hours=24)) == ["whsec_new"]
    assert Endpoint("we_2", "https://example.com/", "whsec_only").signing_secrets(NOW) == \
        ["whsec_only"]


# --------------------------------------------------------------------------- signing


def test_standard_headers_verify_with_every_active_secret() -> None:
    new, old = "whsec_" + "A" * 32, "whsec_" + "B" * 32
    now = datetime.now(UTC)
    body = '{"id":"evt_1","type":"back_in_stock","data":{}}'
    headers = standard_headers([new, old], "evt_1", now, body)
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers) == {"id": "evt_1", "type": "back_in_stock",
                                                  "data": {}}
    assert Webhook(old).verify(body, headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "C" * 32).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace("evt_1", "evt_2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, {**headers, "webhook-id": "evt_2"})


_SECRETS = st.binary(min_size=1, max_size=80).map(
    lambda key: "whsec_" + base64.b64encode(key).decode())


@settings(max_examples=60, deadline=None)
@given(secrets=st.lists(_SECRETS, min_size=1, max_size=3),
       bodies=st.lists(st.text(max_size=300), min_size=2, max_size=4),
       msg_id=st.from_regex(r"evt_[A-Za-z0-9]{1,20}", fullmatch=True),
       seconds=st.integers(min_value=0, max_value=4_000_000_000))
def test_signatures_are_the_packages_own_message_after_message(
        secrets: list[str], bodies: list[str], msg_id: str, seconds: int) -> None:
    """Keys are set up once per secret and copied per message: signing one message must not
    change what the next one is signed with, whatever came before, for any key length (keys
    over 64 bytes are hashed first, as HMAC says)."""
    when = datetime.fromtimestamp(seconds, UTC)
    for body in bodies:
        ours = standard_headers(secrets, msg_id, when, body)["webhook-signature"].split(" ")
        assert ours == [Webhook(s).sign(msg_id, when, body) for s in secrets]


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.0.1", "172.16.0.1", "172.31.255.1",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254",
    "0.0.0.0", "0.1.2.3", "192.0.0.170", "198.18.0.1", "224.0.0.1", "239.1.2.3",
    "240.0.0.1", "255.255.255.255", "192.0.2.1", "203.0.113.9",
    "::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fd00:ec2::254",
    "ff02::1", "64:ff9b::a00:1", "2001:db8::1",
    # IPv4-mapped IPv6 reaches the IPv4 address it wraps
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.0.1",
    "::ffff:100.64.0.1",
])
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert address_allowed(address) is False


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.1", "172.32.0.1",
    "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8",
])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address) is True


def test_the_allow_list_opens_only_its_ranges() -> None:
    allow = parse_allow_list(" 127.0.0.0/8 , 10.1.0.0/16,::1/128, fd00:1::/32 ")
    assert len(allow) == 4
    for ok in ("127.0.0.1", "127.9.9.9", "10.1.2.3", "::1", "fd00:1::5",
               "::ffff:127.0.0.1", "::ffff:10.1.0.1"):
        assert address_allowed(ok, allow), ok
    for blocked in ("10.2.0.1", "169.254.169.254", "192.168.0.1", "fe80::1", "fd00:2::1",
                    "::ffff:10.2.0.1"):
        assert not address_allowed(blocked, allow), blocked
    assert parse_allow_list("") == ()
    assert parse_allow_list("10.1.2.3/8")[0].prefixlen == 8  # host bits are forgiven


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://10.0.0.1/", "http://169.254.169.254/", "http://100.64.0.1/",
    "http://[::1]/", "http://[fe80::1]/", "http://localhost/", "http://api.localhost/",
    "http://metadata.google.internal/", "https://[::ffff:127.0.0.1]:8443/",
    "ftp://example.com/", "http:///nohost",
])
def test_check_url_refuses_at_creation(url: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_url(url, ())
    assert err.value.field == "url"


def test_check_url_accepts_public_and_allow_listed_targets() -> None:
    check_url("https://example.com/hooks", ())
    check_url("http://93.184.215.14:8080/", ())
    check_url("http://127.0.0.1:9000/", LOOPBACK)
    with pytest.raises(InvalidInput):
        check_url("http://10.0.0.1/", LOOPBACK)


# --------------------------------------------------------------------------- resolver, sender

async def test_resolver_refuses_names_that_resolve_to_loopback() -> None:
    with pytest.raises(BlockedAddressError, match="STOCKBELL_WEBHOOK_ALLOW") as err:
        await GuardedResolver(()).resolve("localhost", 0, socket.AF_INET)
    assert "127.0.0.1" in str(err.value)
    found = await GuardedResolver(LOOPBACK).resolve("localhost", 443, socket.AF_INET)
    assert found
    assert {r["host"] for r in found} == {"127.0.0.1"}
    assert {r["port"] for r in found} == {443}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def listener(handler: Handler | None = None) -> AsyncIterator[tuple[int, list[str]]]:
    """A real HTTP server on 127.0.0.1 in this loop; yields its port and the paths hit."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        await request.read()
        return await handler(request) if handler else web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), hits
    finally:
        await runner.cleanup()


@asynccontextmanager
async def sender(allow: Networks = ()) -> AsyncIterator[Sender]:
    s = Sender(allow, Timeouts(1, 1, 2), limit=4)
    try:
        yield s
    finally:
        await s.close()


async def test_sender_refuses_blocked_ip_literals_without_connecting() -> None:
    async with listener() as (port, hits), sender() as s:
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
            attempt, retry_after = await s.post(f"http://{host}:{port}/hook", {}, "{}")
            assert attempt.status_code is None
            assert attempt.error is not None
            assert attempt.error.startswith("refused")
            assert "STOCKBELL_WEBHOOK_ALLOW" in attempt.error
            assert retry_after is None
        assert hits == []


async def test_sender_checks_the_resolved_address_at_connect_time() -> None:
    async with listener() as (port, hits), sender() as s:
        attempt, _ = await s.post(f"http://localhost:{port}/hook", {}, "{}")
        assert attempt.status_code is None
        assert attempt.error is not None
        assert "non-public" in attempt.error
        assert hits == []


async def test_sender_reaches_allow_listed_targets() -> None:
    async with listener() as (port, hits), sender(LOOPBACK) as s:
        attempt, _ = await s.post(f"http://127.0.0.1:{port}/a", {"x-a": "1"}, "{}")
        assert (attempt.status_code, attempt.error) == (204, None)
        named, _ = await s.post(f"http://localhost:{port}/b", {}, "{}")
        assert (named.status_code, named.error) == (204, None)
        assert hits == ["/a", "/b"]
        assert attempt.duration_ms > 0


async def test_sender_caps_the_excerpt_and_reads_retry_after() -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        status = int(request.path.strip("/"))
        return web.Response(status=status, body=b"y" * 10_240,
                            headers={"Retry-After": "7", "Location": "/200"})

    async with listener(answer) as (port, hits), sender(LOOPBACK) as s:
        ok, ok_after = await s.post(f"http://127.0.0.1:{port}/200", {}, "{}")
        busy, busy_after = await s.post(f"http://127.0.0.1:{port}/429", {}, "{}")
        down, down_after = await s.post(f"http://127.0.0.1:{port}/503", {}, "{}")
        broken, broken_after = await s.post(f"http://127.0.0.1:{port}/500", {}, "{}")
        moved, _ = await s.post(f"http://127.0.0.1:{port}/302", {}, "{}")
    assert ok.response_excerpt == "y" * EXCERPT == "y" * 4096
    assert (ok_after, busy_after, down_after, broken_after) == (None, 7.0, 7.0, None)
    assert (busy.status_code, down.status_code, broken.status_code) == (429, 503, 500)
    assert moved.status_code == 302  # answered as is, not followed
    assert hits == ["/200", "/429", "/503", "/500", "/302"]


async def test_sender_sends_no_cookies_and_keeps_nul_out_of_the_excerpt() -> None:
    cookies: list[str | None] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        cookies.append(request.headers.get("Cookie"))
        response = web.Response(status=200, body=b"ok\x00\xffbinary")
        response.set_cookie("session", "abc")
        return response

    async with listener(answer) as (port, _), sender(LOOPBACK) as s:
        first, _ = await s.post(f"http://127.0.0.1:{port}/a", {}, "{}")
        await s.post(f"http://127.0.0.1:{port}/a", {}, "{}")
    assert cookies == [None, None]  # the receiver's cookie is not sent back
    # PostgreSQL text cannot hold NUL: the attempt must stay recordable
    assert first.response_excerpt == "ok\ufffd\ufffdbinary"


@asynccontextmanager
async def trickler() -> AsyncIterator[int]:
    """A raw HTTP server on 127.0.0.1 whose answer's headers come a byte every 0.1 s: never
    silent for the read timeout, so only the total time can end an attempt (bounded: 200
    bytes). Yields its port; a request to any other path than /slow gets a 204 at once."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if not head.split(b" ", 2)[1].startswith(b"/slow"):
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(200):
                    await asyncio.sleep(0.1)
                    writer.write(b"y")
                    await writer.drain()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_sender_ends_an_attempt_at_its_total_time_and_sends_on() -> None:
    async with trickler() as port, sender(LOOPBACK) as s:  # total 2 s, read 1 s
        slow, _ = await s.post(f"http://127.0.0.1:{port}/slow", {}, "{}")
        after, _ = await s.post(f"http://127.0.0.1:{port}/ok", {}, "{}")
        assert not s._deadlines  # nothing left behind
        assert not s._expired
    assert (slow.status_code, slow.error) == (None, "timeout")
    assert 2000 <= slow.duration_ms < 2000 + 1000 * WATCH_EVERY + 500
    assert (after.status_code, after.error) == (204, None)  # no stray cancellation


async def test_a_cancelled_attempt_is_cancelled_not_timed_out() -> None:
    """Stopping the dispatcher cancels its lanes mid-attempt: that must stay a cancellation,
    not be recorded as a timed-out attempt."""
    async with trickler() as port, sender(LOOPBACK) as s:
        attempt = asyncio.create_task(s.post(f"http://127.0.0.1:{port}/slow", {}, "{}"))
        await asyncio.sleep(0.5)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        assert attempt.cancelled()
        assert not s._deadlines


@pytest.mark.parametrize("address", [
    "::10.0.0.1",          # IPv4-compatible (deprecated) loopback/private
    "64:ff9b:1::a00:1",    # local-use NAT64
    "2002:a00:1::1",       # 6to4 wrapping 10.0.0.1
    "2002:7f00:1::1",      # 6to4 wrapping 127.0.0.1
    "fec0::1",             # site-local
])
def test_ipv4_hidden_in_ipv6_is_judged_as_ipv4(address: str) -> None:
    assert not address_allowed(address)


def test_6to4_of_a_public_ipv4_is_allowed() -> None:
    assert address_allowed("2002:808:808::1")


def test_ti_endpoint_hears_only_ti_subscriptions() -> None:
    ti = Endpoint(id="we_ti", url="https://x.example/", secret="whsec_AAAA", format="ti")
    mine = {"subscription": {"reference_origin": "ti"}}
    other = {"subscription": {"reference_origin": "sequenzy"}}
    assert ti.accepts("back_in_stock", mine)
    assert not ti.accepts("back_in_stock", other)
    assert not ti.accepts("back_in_stock", {})
    assert not ti.accepts("inventory.count.updated", mine)

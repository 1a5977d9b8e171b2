"""The bytes a delivery carries do not depend on the fast paths that produce them: the native
body is exactly what `json.dumps` writes, and the signatures are exactly what the
`standardwebhooks` package computes."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from stockbell.delivery.formats import native
from stockbell.delivery.signing import signature_header
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint
from stockbell.store.types import json_text, json_value

json_values = st.recursive(
    # NaN and infinities are not JSON; both paths store them as null (see native.dumps)
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_native_json_is_what_json_dumps_writes(value: Any) -> None:
    assert native.dumps(value) == json.dumps(value, separators=(",", ":"))


def test_native_json_edge_cases() -> None:
    for value in [1e-7, -2.5e-05, 1e-10, 1e16, 2**64, -(2**63) - 1, "é", "\x7f", "\u2028",
                  "\x00\x1f", {"e-1": "line-item", "x": 0.0001}, [1.5e-300], 5e-324]:
        assert native.dumps(value) == json.dumps(value, separators=(",", ":")), value


@given(st.floats(allow_nan=False, allow_infinity=False).flatmap(
    lambda x: st.sampled_from([x, x * 1e-6, x * 1e-12, x * 1e-300])))
def test_native_json_writes_every_float_as_json_dumps(x: float) -> None:
    assert native.dumps({"x": x}) == json.dumps({"x": x}, separators=(",", ":"))


def test_native_json_writes_floats_across_magnitudes_as_json_dumps() -> None:
    for exponent in range(-330, 310):
        for mantissa in (1.0, 2.5, 1.2345678901234567, 9.999999999999999):
            x = float(f"{mantissa}e{exponent}")
            if math.isinf(x):
                continue  # not JSON: written as null, as the store writes it
            for v in (x, -x):
                assert native.dumps([v]) == json.dumps([v], separators=(",", ":")), v


secrets = st.binary(min_size=1, max_size=40).map(
    lambda key: "whsec_" + base64.b64encode(key).decode())


@given(st.lists(secrets, min_size=1, max_size=2), st.text(min_size=1, max_size=30),
       st.integers(0, 4_000_000_000), st.text(st.characters(codec="utf-8"), max_size=200))
def test_signatures_are_what_standardwebhooks_computes(keys: list[str], msg_id: str,
                                                       seconds: int, body: str) -> None:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=123)
    expected = " ".join(Webhook(k).sign(msg_id, at, body) for k in keys)
    assert signature_header(keys, msg_id, at, body) == expected


def test_unpadded_secrets_sign_as_standardwebhooks_reads_them() -> None:
    key = base64.b64encode(b"k" * 23).decode().rstrip("=")
    at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    for secret in (key, "whsec_" + key):
        assert signature_header([secret], "evt_1", at, "{}") == \
            Webhook(secret).sign("evt_1", at, "{}")


@given(json_values)
def test_stored_json_reads_back_as_json_loads_reads_it(value: Any) -> None:
    for text in (json_text(value), json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert repr(json_value(text)) == repr(json.loads(text))
        assert repr(json_value(text.encode())) == repr(json.loads(text))


def test_stored_json_edge_cases_read_as_json_loads() -> None:
    for text in ["123456789012345678901234", "-9223372036854775809", "18446744073709551616",
                 "18446744073709551615", "-0", "1e400", "NaN", '"\\ud800"', '{"a":1,"a":2}',
                 "[0.1,1e-7,5e-324]", '{"big":[1,123456789012345678901234567890]}']:
        assert repr(json_value(text)) == repr(json.loads(text)), text


json_objects = st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=8), json_values,
                               max_size=5)


def _event(data: Any) -> Event:
    at = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return Event("back_in_stock", at, data, item_id=7, sequence=3, id="evt_1", created_at=at)


def _stored(text: str) -> Event:
    at = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return Event.stored("back_in_stock", at, text, json_value, item_id=7, sequence=3,
                        id="evt_1", created_at=at)


@given(json_objects)
def test_a_stored_payload_is_sent_as_the_body_its_decoded_value_gives(value: Any) -> None:
    """The native body of an event read back from the store (its payload still as stored
    text, embedded as it is where it can be) is the body its decoded payload gives."""
    endpoint = Endpoint("we_1", "https://example.com/hook", "whsec_MTIz")
    for text in (json_text(value), json.dumps(value)):
        expected = native.render(_event(json.loads(text)), endpoint)
        assert native.render(_stored(text), endpoint) == expected
        assert json.loads(expected[1])["data"] == json.loads(text)


@given(json_objects)
def test_only_text_that_reads_and_writes_back_the_same_is_embedded_as_is(value: Any) -> None:
    text = json_text(value)
    if native.embeds_as_is(text):
        assert json.dumps(json.loads(text), separators=(",", ":")) == text


def test_embedded_as_is_in_the_common_case_and_not_where_json_dumps_differs() -> None:
    assert native.embeds_as_is(json_text({"sku": "SKU-1", "availability": "5", "n": 1}))
    for value in [{"big": 2**70}, {"t": "é"}, {"x": 1e-7}, {"s": "\x7f"}, {"a": "x: y"}]:
        assert not native.embeds_as_is(json_text(value)), value


def test_a_stored_event_decodes_its_payload_once_when_read() -> None:
    decoded: list[str] = []

    def decode(text: str) -> Any:
        decoded.append(text)
        return json.loads(text)

    at = datetime(2026, 12, 1, tzinfo=UTC)
    event = Event.stored("webhook.test", at, '{"a":1}', decode, id="evt_2")
    assert event.stored_text == '{"a":1}'
    assert decoded == []
    assert event.data == {"a": 1}
    assert event.data == {"a": 1}
    assert decoded == ['{"a":1}']
    assert event.stored_text is None  # read, so possibly changed: data is the truth now
    assert event == Event("webhook.test", at, {"a": 1}, id="evt_2")
    event.data = {"b": 2}
    assert event.data == {"b": 2}
    assert event.stored_text is None


def test_printing_a_stored_event_does_not_decode_its_payload() -> None:
    event = _stored('{"a":1}')
    assert '{"a":1}' in repr(event)
    assert event.stored_text == '{"a":1}'

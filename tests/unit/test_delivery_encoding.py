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

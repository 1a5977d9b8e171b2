"""What text and JSON the databases can store and strict JSON can carry back out."""

from __future__ import annotations

import pytest

from stockbell.domain.text import json_problem, storable


@pytest.mark.parametrize(("text", "ok"), [
    ("plain", True), ("émoji 🎉", True), ("nul\x00", False), ("lone \ud800", False),
])
def test_storable(text: str, ok: bool) -> None:
    assert storable(text) is ok


def test_json_problems() -> None:
    assert json_problem({"a": [1, "x", {"b": None}]}) is None
    assert json_problem({"a": "has\x00nul"}) is None  # escaped inside a JSON column
    assert json_problem({"a": "has\x00nul"}, allow_nul=False) is not None
    assert json_problem({"\ud800": 1}) is not None  # keys are checked too
    assert json_problem({"n": float("nan")}) is not None
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    assert json_problem(deep) is not None
    assert json_problem(deep, max_depth=100) is None

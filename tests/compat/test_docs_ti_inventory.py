"""The curl examples in docs/compat/ti.md and docs/compat/inventory-update.md run, in order,
against a real server (curl itself, in bash, with $BASE, $TOKEN, ... set), and succeed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_ti import SEED_EXAMPLE, ti_client
from tests.integration.test_delivery import Receiver, own_server, verify
from tests.support import Server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compat"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
# Any HTTP error status fails the example (and shows the body).
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl program"),
]


def curl_blocks(name: str) -> list[str]:
    blocks = [b for b in BLOCK.findall((DOCS / name).read_text()) if "curl " in b]
    assert blocks, f"no ```sh curl examples in {name}"
    return blocks


def run(block: str, **env: str) -> Any:
    proc = subprocess.run(["bash", "-c", PRELUDE + block], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], **env}, check=False)
    assert proc.returncode == 0, f"{block}\n--> exit {proc.returncode}\n{proc.stdout}" \
                                 f"\n{proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    with own_server(db_url) as s:
        yield s


def test_ti_examples(srv: Server) -> None:
    t = srv.tenant()
    token = ti_client(srv, t).headers["authorization"].removeprefix("Bearer ")
    blocks = curl_blocks("ti.md")
    with Receiver() as rx:
        env = {"BASE": srv.base_url, "TOKEN": token, "CLIENT_ID": t.client_id,
               "CLIENT_SECRET": t.client_secret, "HOOK_URL": rx.url("/ti")}
        out = [run(b, **env) for b in blocks]
        [got] = rx.wait_for(1)
    assert len(out) == 7
    endpoint, item, token_out, created, listing, test, removed = out
    assert endpoint["format"] == "ti"
    assert item["part_number"] == "TESTOPN"
    assert token_out["expires_in"] == 3599
    subscription = {"tiPartNumber": "TESTOPN", "requestedQty": 75, "currency": "USD",
                    "autoSubscribe": False, "expiration": 30}
    assert created == removed == subscription
    assert listing == [subscription]
    assert test == {"status": "accepted", "responseCode": 200}
    assert verify(endpoint["secret"], got) == SEED_EXAMPLE
    assert t.get("/v2/store/subscriptions/inventory").json() == []


def test_inventory_update_examples(srv: Server) -> None:
    t = srv.tenant()
    blocks = curl_blocks("inventory-update.md")
    out = [run(b, BASE=srv.base_url, TOKEN=t.client_secret) for b in blocks]
    assert len(out) == 6
    assert out[3] == {"success": True, "item": "SNEAKER-849632048260", "store": "3",
                      "quantity": 12, "applied": True, "notifications": 0}
    assert out[4]["item"] == "ZOOT-SUIT-34-D"
    assert out[4]["quantity"] == 44
    assert out[5]["locations"] == [{"location": "3", "quantities": {"IN_STOCK": "44"}}]
    r = t.get("/v1/inventory/SNEAKER-849632048260")
    assert r.json()["locations"] == [{"location": "3", "quantities": {"IN_STOCK": "12"}}]

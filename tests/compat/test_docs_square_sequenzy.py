"""The Square and Sequenzy guides (docs/compat/square.md, docs/compat/sequenzy.md) as written:
their ```sh curl blocks run in order against a real server ($BASE, $TOKEN and $HOOK_URL set),
every answer is a success, and the notifications they cause reach a real loopback receiver;
the guide's Python listener runs as written and prints what a real delivery carries."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compat.test_square import verify as verify_square
from tests.integration.test_delivery import Receiver, own_server, verify, wait_until
from tests.support import Server, Tenant, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compat"
# Every curl fails on an HTTP error and ends its answer with a newline: one JSON per line.
CURL = 'curl() { command curl -sS --fail-with-body -w "\\n" "$@"; }\n'


def blocks(doc: str, lang: str) -> list[str]:
    text = (DOCS / doc).read_text()
    found = re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)
    assert found, f"no ```{lang} block in {doc}"
    return found


def run_blocks(doc: str, t: Tenant, base: str, hook_url: str) -> list[dict[str, Any]]:
    env = {"PATH": os.environ["PATH"], "BASE": base, "TOKEN": t.client_secret,
           "HOOK_URL": hook_url}
    answers: list[dict[str, Any]] = []
    for block in blocks(doc, "sh"):
        assert "curl" in block
        done = subprocess.run(["sh", "-e", "-c", CURL + block], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{block}\n-> {done.stdout}{done.stderr}"
        answers += [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return answers


@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    with own_server(db_url) as server:
        yield server


def test_square_guide_runs_as_written(srv: Server) -> None:
    t = srv.tenant()
    with Receiver() as rx:
        answers = run_blocks("square.md", t, srv.base_url, rx.url("/square"))
        got = rx.wait_for(2)
    item, location, endpoint, count, sale = answers
    assert (item["sku_code"], location["code"]) == ("XYZ456", "locationToken")
    assert endpoint["format"] == "square"
    assert all("errors" not in a for a in answers)
    assert [(c["state"], c["quantity"]) for c in count["counts"]] == [("IN_STOCK", "12.375")]
    assert [(c["state"], c["quantity"]) for c in sale["counts"]] == [("IN_STOCK", "10.375"),
                                                                     ("SOLD", "2")]
    notices = [verify_square(endpoint["secret"], rx.url("/square"), g) for g in got]
    assert [[(c["catalog_object_id"], c["location_id"], c["state"], c["quantity"])
             for c in n["data"]["inventory_counts"]] for n in notices] == [
        [("XYZ456", "locationToken", "IN_STOCK", "12.375")],
        [("XYZ456", "locationToken", "IN_STOCK", "10.375"),
         ("XYZ456", "locationToken", "SOLD", "2")]]


def test_sequenzy_guide_runs_as_written(srv: Server) -> None:
    t = srv.tenant()
    with Receiver() as rx:
        answers = run_blocks("sequenzy.md", t, srv.base_url, rx.url("/sequenzy"))
        got = rx.wait_for(2)
    synced, endpoint, requested, restocked = answers
    assert endpoint["format"] == "sequenzy"
    for answer in (synced, requested, restocked):
        assert answer["success"] is True
    assert requested["subscriberId"].startswith("sub_")
    assert restocked["backInStockEventsTriggered"] == 1
    events = [verify(endpoint["secret"], g) for g in got]
    assert [e["event"] for e in events] == ["ecommerce.back_in_stock_requested",
                                            "ecommerce.back_in_stock"]
    assert events[1]["email"] == "buyer@example.com"
    assert events[1]["data"]["subscriber_id"] == requested["subscriberId"]
    assert events[1]["data"]["variant_title"] == "Vanilla"


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the guide's listener did not start")


def test_square_guide_listener_verifies_and_prints_each_catalog_object_id(
        srv: Server, tmp_path: Path) -> None:
    [listener] = blocks("square.md", "python")
    script = tmp_path / "listener.py"
    script.write_text(listener)
    t = srv.tenant()
    assert t.put("/v1/items/XYZ456", json={}).status_code == 200
    assert t.put("/v1/locations/locationToken", json={}).status_code == 200
    port = free_port()
    url = f"http://127.0.0.1:{port}/square/webhooks"
    endpoint = t.post("/v1/webhook-endpoints", json={"url": url, "format": "square"}).json()
    env = {"PATH": os.environ["PATH"], "SQUARE_SIGNATURE_KEY": endpoint["secret"],
           "NOTIFICATION_URL": url, "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc)
        r = t.post("/v2/inventory/changes/batch-create", json={
            "idempotency_key": "listener", "changes": [
                {"type": "PHYSICAL_COUNT", "physical_count": {
                    "catalog_object_id": "XYZ456", "location_id": "locationToken",
                    "state": "IN_STOCK", "quantity": "12.375"}},
                {"type": "ADJUSTMENT", "adjustment": {
                    "catalog_object_id": "XYZ456", "location_id": "locationToken",
                    "from_state": "IN_STOCK", "to_state": "SOLD", "quantity": "2"}}]})
        assert r.status_code == 200, r.text
        wait_until(lambda: [
            d["status"] for d in t.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
            .json()["data"]] == ["succeeded", "succeeded"], what="both deliveries")
        # a request it cannot verify is refused
        forged = httpx.post(url, content=b'{"data": {"inventory_counts": []}}',
                            headers={"x-square-hmacsha256-signature": "bm9wZQ=="})
        assert forged.status_code == 403
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert out.count("Catalog object ID: XYZ456") == 3, out + err
    assert out.count("Catalog object type: ITEM_VARIATION") == 3
    assert out.count("The quantity has been updated") == 2

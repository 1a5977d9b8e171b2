"""docs/compat/commercelayer.md runs as written: every ```sh block, in order, with real curl
against a real server (its own database, loopback webhooks allowed) and a real receiver, on
SQLite and PostgreSQL. Each block must answer 2xx; the ids later blocks need come from the
answers of earlier ones, as the page says."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_delivery import Receiver, own_server
from tests.support import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "compat" / "commercelayer.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
PLACEHOLDER = re.compile(r"\$([A-Z_]+)")
KNOWN = {"BASE", "TOKEN", "CLIENT_ID", "CLIENT_SECRET", "CUSTOMER_ID", "SKU_ID",
         "SUBSCRIPTION_ID", "RECEIVER_URL"}


def blocks() -> list[str]:
    found = BLOCK.findall(DOC.read_text())
    assert len(found) >= 15, "the page lost its examples"
    return found


def test_every_block_is_one_curl_with_known_placeholders() -> None:
    for block in blocks():
        assert len(re.findall(r"(^|\s)curl\s", block)) == 1, block
        assert set(PLACEHOLDER.findall(block)) <= KNOWN, block


@pytest.fixture(scope="module")
def docs_server(db_url: str) -> Iterator[Server]:
    with own_server(db_url) as srv:
        yield srv


def run(block: str, values: dict[str, str]) -> tuple[int, str]:
    script = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), block)
    # -sS: quiet but for errors; -w: the status on a line of its own after the body
    script = re.sub(r"(^|\s)curl\s", r"\1curl -sS -w '\\n%{http_code}' ", script, count=1)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{script}\n{done.stderr}"
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_docs_examples_run(docs_server: Server) -> None:
    t = docs_server.tenant()
    r = docs_server.client().post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": t.client_id,
        "client_secret": t.client_secret})
    assert r.status_code == 200, r.text
    with Receiver() as rx:
        values = {"BASE": docs_server.base_url, "TOKEN": r.json()["access_token"],
                  "CLIENT_ID": t.client_id, "CLIENT_SECRET": t.client_secret,
                  "RECEIVER_URL": rx.url("/commercelayer")}
        answers: list[tuple[str, int, Any]] = []
        secret = ""
        for block in blocks():
            status, body = run(block, values)
            assert 200 <= status < 300, f"{block}\n-> {status} {body}"
            doc = json.loads(body) if body.strip() else None
            answers.append((block, status, doc))
            if not isinstance(doc, dict):
                continue
            data = doc.get("data")
            if isinstance(data, dict) and data.get("type") == "in_stock_subscriptions" \
                    and "SUBSCRIPTION_ID" not in values:
                values["SUBSCRIPTION_ID"] = data["id"]
            for res in doc.get("included", []):
                key = {"customers": "CUSTOMER_ID", "skus": "SKU_ID"}.get(res["type"])
                if key:
                    values.setdefault(key, res["id"])
            if doc.get("format") == "commercelayer":
                secret = doc["secret"]

        # what the page promises along the way
        creates = [d for b, s, d in answers if "POST" in b and "/api/in_stock" in b]
        assert [s for b, s, _ in answers if "POST" in b and "/api/in_stock" in b] == [201, 201]
        assert creates[0]["data"]["attributes"]["stock_threshold"] == 3
        assert creates[1]["data"]["attributes"]["customer_email"] == "john@example.com"
        scoped = [d for b, _, d in answers if "scope=market:EU" in b]
        assert scoped[0]["scope"] == "market:EU"
        assert scoped[0]["expires_in"] > 0
        deleted = [s for b, s, _ in answers if "DELETE" in b]
        assert deleted == [204]

        # the stock count at the end notified the subscription still active, signed
        assert secret
        [got] = rx.wait_for(1)
        assert got.headers["x-commercelayer-topic"] == "in_stock_subscriptions.notify"
        mac = hmac.new(secret.encode(), got.body, hashlib.sha256).digest()
        assert got.headers["x-commercelayer-signature"] == base64.b64encode(mac).decode()
        notified = got.json()["data"]
        assert notified["id"] == creates[1]["data"]["id"]
        assert notified["attributes"]["status"] == "notified"

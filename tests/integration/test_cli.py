"""The `stockbell` command as an operator runs it: real subprocesses on a SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, sqlite_database

pytestmark = pytest.mark.slow

_BIN = Path(sys.executable).with_name("stockbell")
STOCKBELL = [str(_BIN)] if _BIN.exists() else (
    [shutil.which("stockbell")] if shutil.which("stockbell") else
    [sys.executable, "-c", "from stockbell.cli import main; main()"])


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKBELL_")}
    env.update(STOCKBELL_DATABASE_URL=url, STOCKBELL_LOG_LEVEL="warning",
               COLUMNS="200", NO_COLOR="1")
    return env


def start(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*STOCKBELL, *args], env=env_for(url), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return finish(start(url, *args))


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C, as an operator stops it; its stdout and stderr (killed after 15 s)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def one_json_object(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sqlite_database(str(tmp_path_factory.mktemp("cli"))) as url:
        yield url


@pytest.fixture(scope="module")
def shop(cli_db: str) -> dict[str, Any]:
    """An account and a secret test key, both made with the CLI."""
    name = f"shop-{uuid.uuid4().hex[:8]}"
    created = run(cli_db, "accounts", "create", name)
    assert created.returncode == 0, created.stderr
    assert name in created.stderr
    keys = run(cli_db, "keys", "create", "--account", name, "--mode", "test", "--json")
    assert keys.returncode == 0, keys.stderr
    key = one_json_object(keys.stdout)
    assert key["account"] == name
    assert key["mode"] == "test"
    assert key["publishable"] is False
    assert key["client_id"].startswith("ci_test_")
    assert key["client_secret"].startswith("sk_test_")
    return {"name": name, **key}


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    url = f"sqlite+aiosqlite:///{path}"
    r = run(url, "migrate")
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stderr
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"accounts", "api_keys", "items", "subscriptions", "events"} <= tables
    assert len(version) == 1


def test_keys_and_accounts_errors_and_variants(cli_db: str, shop: dict[str, Any]) -> None:
    # independent invocations, run side by side to keep the test quick
    procs = {
        "duplicate": start(cli_db, "accounts", "create", shop["name"]),
        "unknown": start(cli_db, "keys", "create", "--account", "no-such-shop",
                         "--mode", "test", "--json"),
        "publishable": start(cli_db, "keys", "create", "--account", shop["name"],
                             "--mode", "test", "--publishable", "--json"),
        "live": start(cli_db, "keys", "create", "--account", shop["name"], "--mode", "live"),
        "bad_mode": start(cli_db, "keys", "create", "--account", shop["name"],
                          "--mode", "prod"),
    }
    res = {name: finish(p) for name, p in procs.items()}

    dup = res["duplicate"]
    assert dup.returncode != 0
    assert "already exists" in dup.stderr
    assert "Traceback" not in dup.stderr
    assert dup.stdout == ""

    unknown = res["unknown"]
    assert unknown.returncode != 0
    assert "no-such-shop" in unknown.stderr
    assert "does not exist" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert unknown.stdout == ""  # nothing a script could mistake for a key

    pub = one_json_object(res["publishable"].stdout)
    assert res["publishable"].returncode == 0
    assert pub["publishable"] is True
    assert pub["client_secret"].startswith("pk_test_")
    assert pub["client_id"] != shop["client_id"]

    live = res["live"]
    assert live.returncode == 0, live.stderr
    assert "client_id:" in live.stdout
    assert "sk_live_" in live.stdout

    assert res["bad_mode"].returncode == 2  # usage error
    assert "prod" in res["bad_mode"].stderr

    # the database holds exactly what succeeded
    path = cli_db.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:
        (accounts,) = conn.execute("SELECT count(*) FROM accounts WHERE name = ?",
                                   (shop["name"],)).fetchone()
        keys = conn.execute(
            "SELECT mode, publishable FROM api_keys JOIN accounts a ON a.id = account_id "
            "WHERE a.name = ? ORDER BY api_keys.id", (shop["name"],)).fetchall()
        secrets = [r[0] for r in conn.execute("SELECT secret_hash FROM api_keys")]
    assert accounts == 1
    assert sorted(keys) == [("live", 0), ("test", 0), ("test", 1)]
    # secrets are stored hashed, never in clear
    assert shop["client_secret"] not in secrets
    assert pub["client_secret"] not in secrets


def test_serve_answers_and_accepts_cli_keys(cli_db: str, shop: dict[str, Any],
                                            tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([*STOCKBELL, "serve", "--port", str(port)], env=env_for(cli_db),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    # meanwhile, a storefront key from the CLI
    pk_proc = start(cli_db, "keys", "create", "--account", shop["name"], "--mode", "test",
                    "--publishable", "--json")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited early:\n{Path(log.name).read_text()}"
            try:
                r = httpx.get(f"{base}/openapi.json", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start listening"
            time.sleep(0.1)
        assert r.json()["info"]["title"] == "Stockbell"
        assert "/v1/subscriptions" in r.json()["paths"]
        printed = Path(log.name).read_text()
        assert base in printed  # it says where it listens ...
        assert "keys create --account" in printed  # ... and how to get a key

        secret = {"Authorization": f"Bearer {shop['client_secret']}"}
        r = httpx.put(f"{base}/v1/items/SKU-1", json={"title": "Boot"}, headers=secret)
        assert r.status_code == 200, r.text
        tok = httpx.post(f"{base}/oauth/token", data={
            "grant_type": "client_credentials", "client_id": shop["client_id"],
            "client_secret": shop["client_secret"]})
        assert tok.status_code == 200, tok.text
        bearer = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        r = httpx.get(f"{base}/v1/items", headers=bearer)
        assert [i["sku_code"] for i in r.json()["data"]] == ["SKU-1"]
        assert httpx.get(f"{base}/v1/items").status_code == 401

        pub = one_json_object(finish(pk_proc).stdout)
        pk = {"Authorization": f"Bearer {pub['client_secret']}"}
        r = httpx.post(f"{base}/v1/subscriptions", json={"sku_code": "SKU-1"}, headers=pk)
        assert r.status_code == 201, r.text
        assert httpx.get(f"{base}/v1/items", headers=pk).status_code == 403
        # what the storefront created, the secret key sees
        subs = httpx.get(f"{base}/v1/subscriptions", headers=secret).json()["data"]
        assert [x["id"] for x in subs] == [r.json()["id"]]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("serve did not stop on SIGTERM")
        log.close()
        if pk_proc.poll() is None:
            pk_proc.kill()
            pk_proc.wait()
    # uvicorn shuts down gracefully, then re-raises the signal: exit 0 or "killed by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), Path(log.name).read_text()
    assert "Traceback" not in Path(log.name).read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/openapi.json", timeout=2)


def _worker_on_a_missing_database(**extra: str) -> tuple[str, str]:
    """`stockbell worker` for 3.5 s on a PostgreSQL database that does not exist, with a
    password in its URL; its stdout and stderr."""
    url = (f"postgresql+asyncpg://postgres:sekrit-pw@127.0.0.1:5432/"
           f"stockbell_missing_{uuid.uuid4().hex[:12]}")
    env = env_for(url)
    env.update(STOCKBELL_LOG_LEVEL="info", **extra)
    proc = subprocess.Popen([*STOCKBELL, "worker"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3.5)  # the supervisor restarts the dispatcher once a second
    finally:
        out, err = interrupt(proc)
    return out, err


def test_a_worker_without_its_database_logs_plain_tracebacks_without_the_password() -> None:
    """A worker whose database is gone logs each failed start of its dispatcher. structlog's
    default rendering printed every frame's local variables (the database URL with its
    password among them, five times per traceback) at ~30 KB and tens of ms of CPU each."""
    out, err = _worker_on_a_missing_database()
    assert out.count("dispatcher.crashed") >= 2, out[-2000:]
    assert "Traceback (most recent call last)" in out
    assert "does not exist" in out or "Connect" in out, out[-2000:]
    assert "sekrit-pw" not in out + err
    assert "postgres:***@127.0.0.1" in err  # the start-up line names the database, masked
    assert len(out) / out.count("dispatcher.crashed") < 8_000  # ~30 KB each with locals


def test_json_logs_are_one_object_per_line_with_structured_tracebacks() -> None:
    out, err = _worker_on_a_missing_database(STOCKBELL_LOG_FORMAT="json")
    lines = [json.loads(line) for line in out.splitlines()]
    crashes = [x for x in lines if x["event"] == "dispatcher.crashed"]
    assert len(crashes) >= 2, out[-2000:]
    first = crashes[0]
    assert first["level"] == "error"
    assert first["timestamp"].endswith("Z")
    frames = first["exception"][0]["frames"]
    assert any(f["name"] == "supervise" for f in frames)
    assert all("locals" not in f for f in frames)
    assert "sekrit-pw" not in out + err


def test_a_bad_setting_is_named_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    env = env_for(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    env.update(STOCKBELL_LOG_FORMAT="xml", STOCKBELL_TOKEN_TTL_SECONDS="soon")
    done = subprocess.run([*STOCKBELL, "migrate"], env=env, text=True, capture_output=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "STOCKBELL_LOG_FORMAT: Input should be 'console' or 'json'" in done.stderr
    assert "STOCKBELL_TOKEN_TTL_SECONDS" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "x.db").exists()  # nothing was done


def test_a_plain_sqlite_url_works_and_an_unusable_one_is_one_line(tmp_path: Path) -> None:
    """`sqlite:///...` (no driver named) is what a newcomer types; SQLAlchemy alone would
    refuse it with a traceback about pysqlite not being async. `mysql://` used to end in a
    traceback about a missing MySQLdb module."""
    plain = run(f"sqlite:///{tmp_path / 'plain.db'}", "migrate")
    assert plain.returncode == 0, plain.stderr
    assert "sqlite+aiosqlite:///" in plain.stdout + plain.stderr
    assert (tmp_path / "plain.db").exists()

    wrong = run("mysql://root:hunter2@127.0.0.1/shop", "migrate")
    assert wrong.returncode == 2, wrong.stderr
    assert "STOCKBELL_DATABASE_URL" in wrong.stderr
    assert "unsupported database or driver 'mysql'" in " ".join(wrong.stderr.split())
    assert "Traceback" not in wrong.stdout + wrong.stderr
    assert "hunter2" not in wrong.stdout + wrong.stderr


def test_serve_in_json_mode_writes_only_json_lines_uvicorns_included(tmp_path: Path) -> None:
    """uvicorn installs its own plain-text handlers; in JSON mode its records (start-up,
    shutdown, errors) must reach the log shipper as JSON like Stockbell's own."""
    port = free_port()
    env = env_for(f"sqlite:///{tmp_path / 'json.db'}")
    env.update(STOCKBELL_LOG_FORMAT="json", STOCKBELL_LOG_LEVEL="info")
    proc = subprocess.Popen([*STOCKBELL, "serve", "--port", str(port)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve exited early"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start listening"
            time.sleep(0.1)
    finally:
        out, err = interrupt(proc)
    lines = [json.loads(line) for line in out.splitlines()]  # each line is JSON
    by_uvicorn = [x["event"] for x in lines if x.get("logger") == "uvicorn.error"]
    assert any(f"127.0.0.1:{port}" in event for event in by_uvicorn), out
    assert "Application shutdown complete." in by_uvicorn
    assert any(x["event"] == "dispatcher.started" for x in lines)
    assert all(x["timestamp"].endswith("Z") and x["level"] for x in lines)
    assert "Uvicorn running" not in err  # not also as plain text

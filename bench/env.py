"""Everything a scenario needs, started as real processes on 127.0.0.1 and always stopped.

A fresh database (a SQLite file in a temp dir, or a uniquely named PostgreSQL database that is
dropped afterwards), `stockbell serve` / `stockbell worker` subprocesses, a receiver
subprocess, and an account with a secret key made with the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.load import LeanClient
from stockbell.store.database import SqlDatabase

T = TypeVar("T")

STOCKBELL = [sys.executable, "-m", "stockbell"]
PG = {"user": "postgres", "host": "127.0.0.1", "port": 5432}
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time used so far by every PostgreSQL server process on this machine (backends come
    and go; a difference over a span is what they spent in it, the bench's share included)."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return total


def _status_mib(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    return _status_mib(pid, "VmHWM")


def vm_rss_mib(pid: int) -> float | None:
    """Resident set size (VmRSS) of a live process now, in MiB."""
    return _status_mib(pid, "VmRSS")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def hwm(self) -> float | None:
        return vm_hwm_mib(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@dataclass
class Env:
    db: str  # "sqlite" | "postgres"
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stockbell-bench-")))
    url: str = ""
    pg_name: str | None = None
    procs: list[Proc] = field(default_factory=list)
    serve: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    base_url: str = ""
    receiver: Proc | None = None
    receiver_url: str = ""
    receiver_base: str = ""
    secret: str = ""
    account: str = ""
    peaks: dict[str, float] = field(default_factory=dict)
    profilers: list[Proc] = field(default_factory=list)

    # --- set-up ------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        e = dict(os.environ)
        e.update({"STOCKBELL_DATABASE_URL": self.url,
                  "STOCKBELL_WEBHOOK_ALLOW": "127.0.0.0/8",
                  "STOCKBELL_LOG_LEVEL": "warning"})
        e.update(extra)
        return e

    def create_database(self) -> None:
        self.settle()
        if self.db == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.tmp}/stockbell.db"
            return
        self.pg_name = f"stockbell_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{self.pg_name}"'))
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.pg_name}"
        self.cli("migrate")

    def settle(self) -> None:
        """Flush what earlier runs left to write before this one measures: PostgreSQL spreads
        a checkpoint over minutes, and after `ingest` the next scenario's first seconds ran
        at 17-22k changes/s instead of 24-26k while it wrote the earlier data back."""
        os.sync()
        if self.db == "postgres":
            asyncio.run(_pg_admin("CHECKPOINT"))

    def in_process(self, work: Callable[[SqlDatabase], Awaitable[T]]) -> T:
        """Run `work` on this run's database from this process (one pooled connection):
        for what the service does outside a request, such as retention and replays."""
        async def go() -> T:
            db = SqlDatabase(self.url, pool_size=1)
            try:
                return await work(db)
            finally:
                await db.dispose()

        return asyncio.run(go())

    def cli(self, *args: str) -> str:
        out = subprocess.run([*STOCKBELL, *args], env=self.env(), cwd=self.tmp,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"stockbell {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout

    def make_key(self) -> None:
        self.account = f"bench-{uuid.uuid4().hex[:8]}"
        self.cli("accounts", "create", self.account)
        key = json.loads(self.cli("keys", "create", "--account", self.account, "--mode", "test",
                                  "--json"))
        self.secret = key["client_secret"]

    def _spawn(self, name: str, args: list[str], **extra_env: str) -> Proc:
        log = self.tmp / f"{name}.log"
        popen = subprocess.Popen(args, env=self.env(**extra_env), cwd=self.tmp,
                                 stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _profile(self, target: Proc) -> None:
        """With BENCH_PROFILE=<dir>, sample `target` with py-spy (collapsed stacks, idle
        threads left out) until it stops; summarise with `python -m bench.profile <file>`."""
        out_dir = os.environ.get("BENCH_PROFILE")
        if not out_dir:
            return
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        label = os.environ.get("BENCH_LABEL", "bench")
        out = Path(out_dir).resolve() / f"{label}-{self.db}-{target.name}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        log = self.tmp / f"py-spy-{target.name}.log"
        # BENCH_PROFILE_NATIVE=1: C frames too (uvloop's and asyncpg's callbacks, which
        # have no Python frame of their own and are otherwise dropped as idle), at the price
        # of pausing the process for each sample (py-spy cannot unwind C stacks without).
        how = ["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") else ["--nonblocking"]
        popen = subprocess.Popen([spy, "record", "--pid", str(target.pid), "--format", "raw",
                                  "--rate", "100", *how, "-o", str(out)],
                                 stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.profilers.append(Proc(f"py-spy-{target.name}", popen, log))

    def start_serve(self, dispatcher: bool = True, **extra_env: str) -> Proc:
        port = free_port()
        args = [*STOCKBELL, "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not dispatcher:
            args.append("--no-dispatcher")
        self.serve = self._spawn("serve", args, **extra_env)
        self.base_url = f"http://127.0.0.1:{port}"
        self._wait_http(self.base_url + "/metrics", self.serve)
        self._profile(self.serve)
        return self.serve

    def start_worker(self, **extra_env: str) -> Proc:
        w = self._spawn(f"worker{len(self.workers) + 1}", [*STOCKBELL, "worker"], **extra_env)
        self.workers.append(w)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # it prints one line once it runs
            if w.popen.poll() is not None:
                raise RuntimeError(f"worker exited: {w.log.read_text()[-2000:]}")
            if "worker on" in w.log.read_text():
                self._profile(w)
                return w
            time.sleep(0.05)
        raise RuntimeError("worker did not start")

    def start_receiver(self, record: bool = False) -> Proc:
        port = free_port()
        args = [sys.executable, "-m", "bench.receiver", "--port", str(port)]
        if record:
            args.append("--record")
        proc = self.receiver = self._spawn("receiver", args, PYTHONPATH=str(ROOT))
        self.receiver_base = f"http://127.0.0.1:{port}"
        self.receiver_url = self.receiver_base + "/hook"
        self._wait_http(self.receiver_base + "/stats", proc)
        return proc

    def _wait_http(self, url: str, proc: Proc, timeout: float = 30) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{proc.name} did not answer {url}")

    def note_peaks(self) -> None:
        """Remember each live process's VmHWM (call before stopping anything)."""
        for p in self.procs:
            v = p.hwm()
            if v is not None:
                self.peaks[p.name] = max(self.peaks.get(p.name, 0.0), v)

    # --- tear-down ---------------------------------------------------------------------------

    def stop_proc(self, p: Proc) -> None:
        if p.popen.poll() is None:
            try:
                p.popen.send_signal(signal.SIGTERM)
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=10)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for p in self.profilers:  # SIGINT: py-spy writes its file and exits
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGINT)
        for p in self.profilers:
            try:
                p.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
        for p in reversed(self.procs):
            try:
                self.stop_proc(p)
            except Exception as exc:  # keep tearing down
                print(f"warning: stopping {p.name}: {exc!r}", file=sys.stderr)
        if self.pg_name:
            try:
                asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
            except Exception as exc:
                print(f"warning: dropping {self.pg_name}: {exc!r}", file=sys.stderr)
        if os.environ.get("BENCH_KEEP_TMP"):
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Env:
        try:
            self.create_database()
            self.make_key()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- talking to the API ------------------------------------------------------------------

    def session(self, limit: int = 64) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.secret}"},
            connector=aiohttp.TCPConnector(limit=limit, force_close=False),
            timeout=aiohttp.ClientTimeout(total=600),
        )

    def lean_client(self, size: int) -> LeanClient:
        """`size` lean keep-alive connections to `serve` with this env's key (bench/load.py)."""
        port = int(self.base_url.rsplit(":", 1)[1])
        return LeanClient("127.0.0.1", port, self.secret, size)

    async def call(self, s: aiohttp.ClientSession, method: str, path: str,
                   body: Any = None) -> Any:
        async with s.request(method, path, json=body) as r:
            data = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status}: {data[:500]!r}")
            return json.loads(data) if data else None

    async def catalog(self, s: aiohttp.ClientSession, n_items: int, n_locations: int,
                      prefix: str = "SKU") -> tuple[list[str], list[str]]:
        skus = [f"{prefix}-{i:06d}" for i in range(n_items)]
        locs = [f"LOC-{i:03d}" for i in range(n_locations)]
        sem = asyncio.Semaphore(16)

        async def put(path: str, body: Any) -> None:
            async with sem:
                await self.call(s, "PUT", path, body)

        await asyncio.gather(*(put(f"/v1/locations/{c}", {}) for c in locs))
        await asyncio.gather(*(put(f"/v1/items/{k}", {"title": k}) for k in skus))
        return skus, locs

    async def receiver_stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.receiver_base + "/stats") as r:
            return dict(await r.json())

    async def receiver_reset(self) -> None:
        async with aiohttp.ClientSession() as s, s.post(self.receiver_base + "/reset") as r:
            await r.read()

"""Catalogue hot paths through the HTTP API, against a raw-SQL floor on the same database.

For each backend (SQLite, PostgreSQL) a real ``vre serve`` subprocess is started on a free
loopback port; then, through ``vre.client.Client``, on a fresh scope and dataset each time:

  register   N files with replicas and metadata, attached to the dataset, in ONE bulk call
  show       the dataset with its content (GET /dids/S/N)
  list       the dataset's files (GET /dids/S?pattern=DS&recursive&type=file)
  replicas   every file of the dataset with its replicas (POST /replicas/list)
  meta query files with run>50 and kind=mc (GET /dids/S?filter=...)

The raw baseline is an ``executemany`` INSERT of N rows into a scratch table of the same
database, with the sqlite3 / psycopg driver, in one transaction. A second floor inserts the
same rows ``register`` writes (N DIDs, 2N metadata, N replicas, N attachments) into scratch
copies of those tables. Every timing is wall-clock, client side, and includes JSON encoding
and decoding on both ends. No assertions on time: figures and ratios are printed.

    .venv/bin/python bench/catalogue.py [--files 10000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vre_server import login, start_server

from vre.client import Client

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RSE_NAME = "BENCH-DISK"

# The targets (for 10,000 files) and real Rucio 41.5.1 on the same kind of test.
TARGET_REGISTER = 0.7  # register + attach
TARGET_REPLICAS = 0.5  # dataset listed with its replicas
RUCIO_REGISTER, RUCIO_ATTACH, RUCIO_REPLICAS = 5.0, 1.6, 20.8


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throw-away database; yields its name, drops it WITH (FORCE) afterwards."""
    import psycopg

    name = f"vre_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the workload ---------------------------------------------------------------------------
def make_files(scope: str, count: int) -> list[dict[str, Any]]:
    files = []
    for i in range(count):
        name = f"file.{i:07d}.root"
        files.append(
            {
                "scope": scope,
                "name": name,
                "bytes": 1_000_000 + i,
                "adler32": f"{zlib_like(i):08x}",
                "md5": hashlib.md5(f"{scope}:{name}".encode()).hexdigest(),
                "meta": {"run": i % 100, "kind": "mc" if i % 2 else "data"},
            }
        )
    return files


def zlib_like(i: int) -> int:
    return (i * 2654435761) & 0xFFFFFFFF


def expected_query(count: int) -> int:
    """How many files ``run>50,kind=mc`` must return."""
    return sum(1 for i in range(count) if i % 100 > 50 and i % 2)


QUERY = "run>50,kind=mc"


@dataclass
class Timings:
    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, operation: str, seconds: float) -> None:
        self.runs.setdefault(operation, []).append(seconds)

    def best(self, operation: str) -> float:
        return min(self.runs[operation])

    def median(self, operation: str) -> float:
        return statistics.median(self.runs[operation])


def timed(timings: Timings, operation: str, call: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = call()
    timings.add(operation, time.perf_counter() - start)
    return result


def check(condition: bool, message: str) -> None:
    """Correctness, not time: a benchmark of a wrong answer is worthless."""
    if not condition:
        raise SystemExit(f"benchmark aborted, wrong answer: {message}")


OPS = {
    "register": "register+replicas+attach (1 call)",
    "show": "show dataset with content",
    "list": "list dataset files (list_dids)",
    "replicas": "list dataset replicas",
    "meta": f"metadata query {QUERY}",
}


def api_round(client: Client, scope: str, count: int, timings: Timings) -> None:
    client.add_scope(scope)
    client.add_collection(scope, "dataset", "dataset")
    files = make_files(scope, count)  # built before the clock starts
    dataset = f"{scope}:dataset"
    done = timed(timings, "register", lambda: client.register(RSE_NAME, files, dataset=dataset))
    check(done == {"files": count, "replicas": count, "attached": count}, f"register: {done}")
    shown = timed(timings, "show", lambda: client.show(scope, "dataset"))
    check(len(shown["content"]) == count, f"show: {len(shown['content'])} files")
    listed = timed(
        timings,
        "list",
        lambda: client.list_dids(scope, "dataset", recursive=True, type="file"),
    )
    check(len(listed) == count, f"list_dids: {len(listed)} files")
    found = timed(timings, "replicas", lambda: client.replicas([dataset]))
    check(len(found) == count and all(len(f["replicas"]) == 1 for f in found), "replicas")
    matched = timed(timings, "meta", lambda: client.list_dids(scope, "*", filter=QUERY))
    check(len(matched) == expected_query(count), f"meta query: {len(matched)} files")


# --- raw SQL floors -------------------------------------------------------------------------
RAW_TABLE = "CREATE TABLE bench_raw (id {pk}, scope VARCHAR(30) NOT NULL,"
RAW_TABLE += " name VARCHAR(255) NOT NULL, bytes BIGINT, adler32 VARCHAR(8), md5 VARCHAR(32),"
RAW_TABLE += " created_at {ts}, UNIQUE (scope, name))"

SAME_ROWS_TABLES = [
    "CREATE TABLE bench_did (id {pk}, scope VARCHAR(30) NOT NULL, name VARCHAR(255) NOT NULL,"
    " type VARCHAR(16) NOT NULL, account_id INTEGER NOT NULL, bytes BIGINT,"
    " adler32 VARCHAR(8), md5 VARCHAR(32), is_open BOOLEAN NOT NULL, created_at {ts},"
    " UNIQUE (scope, name))",
    "CREATE TABLE bench_meta (did_id BIGINT NOT NULL REFERENCES bench_did(id) ON DELETE CASCADE,"
    " key VARCHAR(128) NOT NULL, value TEXT NOT NULL, number FLOAT, PRIMARY KEY (did_id, key))",
    "CREATE INDEX bench_meta_kv ON bench_meta (key, value)",
    "CREATE INDEX bench_meta_kn ON bench_meta (key, number)",
    "CREATE TABLE bench_replica (did_id BIGINT NOT NULL REFERENCES bench_did(id)"
    " ON DELETE CASCADE, rse_id INTEGER NOT NULL, state VARCHAR(16) NOT NULL,"
    " path VARCHAR(1024) NOT NULL, created_at {ts}, updated_at {ts}, PRIMARY KEY (did_id, rse_id))",
    "CREATE INDEX bench_replica_rse ON bench_replica (rse_id)",
    "CREATE TABLE bench_attach (parent_id BIGINT NOT NULL REFERENCES bench_did(id)"
    " ON DELETE CASCADE, child_id BIGINT NOT NULL REFERENCES bench_did(id) ON DELETE CASCADE,"
    " created_at {ts}, PRIMARY KEY (parent_id, child_id))",
    "CREATE INDEX bench_attach_child ON bench_attach (child_id)",
]
SCRATCH = ("bench_attach", "bench_replica", "bench_meta", "bench_did", "bench_raw")


class RawSQL:
    """The same database through the bare driver: ``executemany`` in one transaction."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.conn: Any = sqlite3.connect(target, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")  # as the server sets them
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.param, self.pk, self.ts = "?", "INTEGER PRIMARY KEY", "VARCHAR(32)"
        else:
            import psycopg

            self.conn = psycopg.connect(target)
            self.param, self.pk, self.ts = "%s", "BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ"

    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now.isoformat(sep=" ") if self.backend == "sqlite" else now

    def _ddl(self, statements: list[str]) -> None:
        cur = self.conn.cursor()
        for table in SCRATCH:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in statements:
            cur.execute(statement.format(pk=self.pk, ts=self.ts))
        self.conn.commit()

    def _insert(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join([self.param] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self.conn.cursor().executemany(sql, rows)

    def insert_rows(self, files: list[dict[str, Any]]) -> float:
        """N rows into one scratch table; returns seconds (commit included)."""
        self._ddl([RAW_TABLE])
        now = self._now()
        rows = [(f["scope"], f["name"], f["bytes"], f["adler32"], f["md5"], now) for f in files]
        start = time.perf_counter()
        self._insert("bench_raw", ("scope", "name", "bytes", "adler32", "md5", "created_at"), rows)
        self.conn.commit()
        return time.perf_counter() - start

    def insert_same_rows(self, files: list[dict[str, Any]]) -> float:
        """What register writes: DIDs (ids read back), metadata, replicas, attachments."""
        import json

        self._ddl(SAME_ROWS_TABLES)
        now = self._now()
        scope = files[0]["scope"]
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO bench_did (scope, name, type, account_id, is_open, created_at)"
            f" VALUES ({self.param}, 'dataset', 'dataset', 1, TRUE, {self.param})",
            (scope, now),
        )
        self.conn.commit()
        did_rows = [
            (f["scope"], f["name"], "file", 1, f["bytes"], f["adler32"], f["md5"], False, now)
            for f in files
        ]
        start = time.perf_counter()
        self._insert(
            "bench_did",
            (
                "scope",
                "name",
                "type",
                "account_id",
                "bytes",
                "adler32",
                "md5",
                "is_open",
                "created_at",
            ),
            did_rows,
        )
        cur.execute(f"SELECT id, name FROM bench_did WHERE scope = {self.param}", (scope,))
        ids = dict((name, i) for i, name in cur.fetchall())
        dataset_id = ids.pop("dataset")
        meta_rows = [
            (ids[f["name"]], k, json.dumps(v), float(v) if isinstance(v, int) else None)
            for f in files
            for k, v in f["meta"].items()
        ]
        self._insert("bench_meta", ("did_id", "key", "value", "number"), meta_rows)
        replica_rows = [
            (ids[f["name"]], 1, "available", f"{scope}/xx/yy/{f['name']}", now, now) for f in files
        ]
        self._insert(
            "bench_replica",
            ("did_id", "rse_id", "state", "path", "created_at", "updated_at"),
            replica_rows,
        )
        attach_rows = [(dataset_id, ids[f["name"]], now) for f in files]
        self._insert("bench_attach", ("parent_id", "child_id", "created_at"), attach_rows)
        self.conn.commit()
        return time.perf_counter() - start

    def close(self) -> None:
        self._ddl([])
        self.conn.close()


# --- one backend ------------------------------------------------------------------------------
def run_backend(backend: str, count: int, repeat: int, workdir: Path) -> Timings:
    home = workdir / backend / "home"
    home.mkdir(parents=True)
    rse_dir = workdir / backend / "rse"
    rse_dir.mkdir()
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            name = stack.enter_context(postgres_database())
            database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            raw_target = f"postgresql://postgres@127.0.0.1:5432/{name}"
        else:
            database_url = None
            raw_target = str(home / "vre.db")
        started = time.perf_counter()
        server = start_server(home, database_url)
        stack.callback(server.stop)
        print(f"  vre serve up in {time.perf_counter() - started:.1f} s at {server.url}")
        client = login(server.url)
        stack.callback(client.http.close)
        client.add_rse(RSE_NAME, f"file://{rse_dir}", {"type": "disk"})
        timings = Timings()
        try:
            api_round(client, "warmup", 100, Timings())  # imports, statement caches: not counted
            for i in range(repeat):
                api_round(client, f"bench{i}", count, timings)
                print(
                    f"  round {i + 1}/{repeat}: "
                    + ", ".join(f"{op} {timings.runs[op][-1]:.3f} s" for op in OPS),
                    flush=True,
                )
        except BaseException:
            print(f"--- server log (tail) ---\n{server.log.read_text()[-3000:]}", file=sys.stderr)
            raise
        raw = RawSQL(backend, raw_target)
        stack.callback(raw.close)
        for i in range(repeat):
            timings.add("raw", raw.insert_rows(make_files(f"raw{i}", count)))
            timings.add("raw_same", raw.insert_same_rows(make_files(f"same{i}", count)))
        return timings


# --- report -----------------------------------------------------------------------------------
def report(backend: str, count: int, timings: Timings) -> None:
    raw = timings.median("raw")
    rows = [("raw SQL executemany INSERT", "raw", count)]
    rows.append(("raw SQL, same rows as register", "raw_same", count))
    rows += [
        (label, op, expected_query(count) if op == "meta" else count) for op, label in OPS.items()
    ]
    print(f"\n{backend}: {count} files, {len(timings.runs['register'])} rounds")
    header = f"  {'operation':<38} {'best s':>8} {'median s':>9} {'items/s':>10} {'x raw':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, op, n in rows:
        best, median = timings.best(op), timings.median(op)
        print(f"  {label:<38} {best:8.3f} {median:9.3f} {n / median:10.0f} {median / raw:7.1f}")
    print("  items/s: files written, listed or returned per second (median); x raw: median")
    print(f"  over the median of the raw INSERT of {count} rows into one scratch table")
    scale = count / 10_000
    note = "" if count == 10_000 else f" (targets scaled linearly from 10,000 to {count})"
    print(f"  targets (judged on the median){note}:")
    for label, op, target, rucio in (
        ("register+attach", "register", TARGET_REGISTER, RUCIO_REGISTER + RUCIO_ATTACH),
        ("dataset listed with replicas", "replicas", TARGET_REPLICAS, RUCIO_REPLICAS),
    ):
        median, goal, ref = timings.median(op), target * scale, rucio * scale
        verdict = "PASS" if median < goal else "MISS"
        print(
            f"    {label:<30} {median:6.3f} s  < {goal:.2f} s  {verdict}"
            f"   (Rucio 41.5.1: {ref:.1f} s, {ref / median:.0f}x ours)"
        )
    print(
        f"    Rucio 41.5.1 reference for 10,000: register {RUCIO_REGISTER} s + attach"
        f" {RUCIO_ATTACH} s, dataset replicas listed {RUCIO_REPLICAS} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Starts its own vre serve (and a throw-away PostgreSQL database) and cleans up.",
    )
    parser.add_argument("--files", type=int, default=10_000, help="files per dataset")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="database"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each on a fresh scope")
    args = parser.parse_args()
    if args.files < 100:
        parser.error("--files must be at least 100")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    workdir = Path(tempfile.mkdtemp(prefix="vre-bench-catalogue-"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before starting")
    results = {}
    try:
        for backend in backends:
            print(f"{backend}: starting", flush=True)
            results[backend] = run_backend(backend, args.files, args.repeat, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for backend, timings in results.items():
        report(backend, args.files, timings)


if __name__ == "__main__":
    main()

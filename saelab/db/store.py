"""The results store: one DuckDB file per workspace; the only code in saelab that speaks SQL.

Concurrency: DuckDB lets one process hold the file for writing and blocks every other process meanwhile
(readers included). So nothing keeps a connection open: each write is one short transaction on a fresh
connection, each read a fresh read-only connection, and both retry with back-off while another process holds
the file, for at most `lock_timeout_s`. A trainer buffers its metric rows and writes them in batches.
"""

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from saelab.db.schema import SCHEMA_VERSION, pending
from saelab.errors import StoreError

log = logging.getLogger(__name__)

_LOCK_MESSAGES = ("Could not set lock", "Conflicting lock", "database is locked")
_READ_ONLY_MESSAGES = ("Read-only file system", "Permission denied")


class ResultsStore:
    """Typed reads and writes over one DuckDB file. Building the value touches no disk."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._columns: dict[str, list[str]] = {}

    # -- connections -------------------------------------------------------------------------------------
    @contextmanager
    def connect(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits (bounded) while another process holds the file."""
        if read_only and not self.path.exists():
            raise StoreError(
                f"no results store at {self.path}: run a saelab command that writes results first"
            )
        con = self._open_with_retries(read_only)
        try:
            yield con
        except duckdb.IOException as exc:  # e.g. a truncated file: it opens, then a page cannot be read
            if "No space left" in str(exc):
                raise StoreError(
                    f"no space left on the device of {self.path}; the last write was not stored: "
                    "free some space and run the command again"
                ) from None
            raise StoreError(
                f"{self.path} could not be read or written ({str(exc).splitlines()[0]}); "
                "if it is damaged, move it aside or pick another --workspace"
            ) from None
        finally:
            con.close()

    def _open_with_retries(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                message = str(exc)
                if any(m in message for m in _READ_ONLY_MESSAGES):
                    raise StoreError(
                        f"{self.path} is read-only here ({message.splitlines()[0]}); nothing in it was "
                        "changed: "
                        "make the workspace writable or pick another --workspace"
                    ) from None
                if not any(m in message for m in _LOCK_MESSAGES):
                    raise StoreError(
                        f"{self.path} is not a usable saelab results store ({message.splitlines()[0]}); "
                        "move it aside or pick another --workspace"
                    ) from None
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.path} stayed locked by another process for {self.lock_timeout_s:.0f} s; "
                        "retry when it finishes"
                    ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    # -- schema ------------------------------------------------------------------------------------------
    def initialize(self) -> "ResultsStore":
        """Create the store or bring it to the current schema version (forward migrations only)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect(read_only=False) as con:
            current = _schema_version(con)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this saelab ({SCHEMA_VERSION}); "
                    "upgrade saelab"
                )
            todo = pending(current)
            if todo:
                con.execute("BEGIN TRANSACTION")
                con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                for migration in todo:
                    for statement in migration.statements:
                        con.execute(statement)
                    log.info("results store %s: migrated to version %d", self.path, migration.version)
                con.execute("DELETE FROM schema_version")
                con.execute("INSERT INTO schema_version VALUES (?)", [todo[-1].version])
                con.execute("COMMIT")
        return self

    def schema_version(self) -> int:
        with self.connect(read_only=True) as con:
            return _schema_version(con)

    def tables(self) -> list[str]:
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name"
            ).fetchall()
        return [r[0] for r in rows]

    # -- generic typed insert / select over known tables ----------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """Several writes as one transaction: readers (and a re-run after a kill) see all of them or none."""
        with self.connect(read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield Transaction(self, con)
            except BaseException:
                with suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Append `rows` to `table` in one transaction; JSON columns take dicts/lists. Returns the count."""
        if not rows:
            return 0
        with self.transaction() as tx:
            return tx.insert(table, rows)

    def replace_rows(self, table: str, where: dict[str, Any], rows: Sequence[dict[str, Any]]) -> int:
        """In one transaction: delete the rows of `table` whose columns equal `where`, then insert `rows`."""
        with self.transaction() as tx:
            return tx.replace_rows(table, where, rows)

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]]) -> None:
        columns = self._table_columns(con, table)
        unknown = sorted({key for row in rows for key in row} - set(columns))
        if unknown:
            raise ValueError(f"table {table!r} has no column(s) {unknown}; columns are {columns}")
        names = [c for c in columns if any(c in row for row in rows)]
        frame = pd.DataFrame([{c: _to_db_value(row.get(c)) for c in names} for row in rows], columns=names)
        con.register("saelab_rows", frame)
        quoted = ", ".join(f'"{c}"' for c in names)  # names come from the schema, never from users
        con.execute(f'INSERT INTO "{table}" ({quoted}) SELECT {quoted} FROM saelab_rows')
        con.unregister("saelab_rows")

    def select(self, table: str, where: dict[str, Any] | None = None, order_by: Sequence[str] = (),
               limit: int | None = None) -> pd.DataFrame:
        """Rows of `table` whose columns equal the values in `where` (parameterised)."""
        where = where or {}
        with self.connect(read_only=True) as con:
            columns = self._table_columns(con, table)
            bad = [c for c in (*where, *order_by) if c not in columns]
            if bad:
                raise ValueError(f"table {table!r} has no column(s) {bad}; columns are {columns}")
            sql = f'SELECT * FROM "{table}"'
            if where:
                sql += " WHERE " + " AND ".join(f'"{c}" = ?' for c in where)
            if order_by:
                sql += " ORDER BY " + ", ".join(f'"{c}"' for c in order_by)
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return con.execute(sql, list(where.values())).fetchdf()

    def _table_columns(self, con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        if table not in self._columns:
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY "
                "ordinal_position",
                [table],
            ).fetchall()
            if not rows:
                raise ValueError(f"the results store has no table {table!r}")
            self._columns[table] = [r[0] for r in rows]
        return self._columns[table]

    # -- runs ----------------------------------------------------------------------------------------------
    def start_run(self, kind: str, name: str | None = None, config: dict | None = None) -> str:
        """Insert a run with status 'running' (and this process's id); returns its id. Runs of the same kind
        left 'running' by a process that is gone are marked 'interrupted' first."""
        run_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with self.transaction() as tx:
            tx.interrupt_stale_runs(kind)
            tx.insert("runs", [{"run_id": run_id, "kind": kind, "name": name, "config": config or {},
                                "status": "running", "pid": os.getpid()}])
        return run_id

    def interrupt_stale_runs(self, kind: str) -> list[str]:
        """Mark runs of `kind` still 'running' whose process has ended as 'interrupted'; returns their ids."""
        with self.transaction() as tx:
            return tx.interrupt_stale_runs(kind)

    def resume_run(self, run_id: str, message: str) -> None:
        """Mark an existing run 'running' again, now owned by this process."""
        with self.connect(read_only=False) as con:
            con.execute(
                "UPDATE runs SET status = 'running', message = ?, pid = ?, updated_at = current_timestamp "
                "WHERE run_id = ?",
                [message, os.getpid(), run_id],
            )

    def finish_run(self, run_id: str, status: str = "done", message: str | None = None) -> None:
        with self.connect(read_only=False) as con:
            con.execute(
                "UPDATE runs SET status = ?, message = ?, updated_at = current_timestamp WHERE run_id = ?",
                [status, message, run_id],
            )

    def delete_training_metrics_after(self, run_id: str, step: int) -> None:
        """Drop a run's metric rows past `step` (a resumed run recomputes them from its checkpoint)."""
        with self.connect(read_only=False) as con:
            con.execute("DELETE FROM training_metrics WHERE run_id = ? AND step > ?", [run_id, step])

    def runs(self) -> pd.DataFrame:
        return self.select("runs", order_by=["created_at"])


class Transaction:
    """Writes inside one open transaction of a ResultsStore (see `ResultsStore.transaction`)."""

    def __init__(self, store: ResultsStore, con: duckdb.DuckDBPyConnection) -> None:
        self.store, self.con = store, con

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        if rows:
            self.store._insert(self.con, table, rows)
        return len(rows)

    def replace_rows(self, table: str, where: dict[str, Any], rows: Sequence[dict[str, Any]]) -> int:
        if not where:
            raise ValueError("replace_rows needs a non-empty `where`; it never empties a whole table")
        columns = self.store._table_columns(self.con, table)
        bad = [c for c in where if c not in columns]
        if bad:
            raise ValueError(f"table {table!r} has no column(s) {bad}; columns are {columns}")
        self.con.execute(f'DELETE FROM "{table}" WHERE ' + " AND ".join(f'"{c}" = ?' for c in where),
                         list(where.values()))
        return self.insert(table, rows)

    def interrupt_stale_runs(self, kind: str) -> list[str]:
        running = self.con.execute("SELECT run_id, pid FROM runs WHERE kind = ? AND status = 'running'",
                                   [kind]).fetchall()
        stale = [(run_id, pid) for run_id, pid in running if not process_alive(pid)]
        for run_id, pid in stale:
            self.con.execute(
                "UPDATE runs SET status = 'interrupted', updated_at = current_timestamp, "
                "message = ? WHERE run_id = ?", [f"process {pid} ended without finishing the run", run_id])
        return [run_id for run_id, _ in stale]


def process_alive(pid: int | None) -> bool:
    """Whether process `pid` on this machine still runs (an exited, unreaped child counts as ended)."""
    if pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _to_db_value(value: Any) -> Any:
    """dicts and lists go to JSON columns as text."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value

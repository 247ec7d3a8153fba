"""A results store as an older schema version wrote it, for migration tests."""

from pathlib import Path

import duckdb

from saelab.db import MIGRATIONS


def store_at_version(path: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A connection to a new store at `path` as schema version `version` wrote it (no later migration)."""
    con = duckdb.connect(str(path))
    for migration in MIGRATIONS[:version]:
        for statement in migration.statements:
            con.execute(statement)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute(f"INSERT INTO schema_version VALUES ({version})")
    return con

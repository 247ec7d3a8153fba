"""The results store (DuckDB). `saelab.db` is the only module that speaks SQL."""

from saelab.db.schema import MIGRATIONS, SCHEMA_VERSION
from saelab.db.store import ResultsStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ResultsStore"]

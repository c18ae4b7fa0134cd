"""SQL over the bundle's Parquet with DuckDB: ``images``, ``cases`` and ``image_reports`` views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from .errors import BundleError, QueryError

TABLES = ("images", "cases", "image_reports")


def connect(parquet_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per Parquet table (the bundle is never written)."""
    con = duckdb.connect(":memory:")
    for name in TABLES:
        path = Path(parquet_dir) / f"{name}.parquet"
        if not path.is_file():
            raise BundleError(f"bundle has no {path.name} (rebuild it with 'medpix-tui bundle build')")
        quoted = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{quoted}')")
    return con


def run_sql(con: duckdb.DuckDBPyConnection, query: str, *, limit: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement; return column names and rows (at most ``limit``)."""
    if not query.strip():
        raise QueryError("empty SQL statement")
    try:
        rel = con.execute(query)
        columns = [d[0] for d in rel.description or []]
        rows = rel.fetchmany(limit) if limit else rel.fetchall()
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {str(exc).splitlines()[0]}") from None
    return columns, rows

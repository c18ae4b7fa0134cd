"""SQL over the bundle's Parquet with DuckDB: ``images``, ``cases`` and ``image_reports`` views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from .errors import BundleError, QueryError

TABLES = ("images", "cases", "image_reports")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(parquet_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per Parquet table, confined to the bundle's Parquet.

    Statements can read only that folder and write no file at all: ``read_text('/etc/...')``
    or ``COPY ... TO`` fail, and the confinement cannot be switched off from SQL.
    """
    folder = Path(parquet_dir).resolve()
    for name in TABLES:
        if not (folder / f"{name}.parquet").is_file():
            raise BundleError(f"bundle has no {name}.parquet (rebuild it with 'medpix-tui bundle build')")
    con = duckdb.connect(":memory:")
    con.execute(f"SET allowed_directories = [{_quote(str(folder) + '/')}]")
    con.execute("SET enable_external_access = false")
    for name in TABLES:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_quote(str(folder / (name + '.parquet')))})")
    con.execute("SET lock_configuration = true")
    return con


def run_sql(con: duckdb.DuckDBPyConnection, query: str, *,
            limit: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
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

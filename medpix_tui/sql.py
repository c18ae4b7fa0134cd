"""SQL over the bundle's Parquet with DuckDB: ``images``, ``cases`` and ``image_reports`` views.

The bundle is meant to be trusted in air-gapped labs, so SQL is a sandbox with two walls:

* DuckDB itself: the three Parquet files are read once, read-only, into an in-memory
  catalog (``medpix_bundle``) when the connection opens; then file access is switched off
  (``enable_external_access = false`` with no allowed path, no temp directory), extension
  loading too, a ``memory_limit`` is set and the configuration is locked. No statement can
  read or write any file after that, the bundle's included.
* :func:`check_sql`, before DuckDB runs anything: SQL here is read-only. DuckDB's own
  parser splits the text into statements and names their types, and its tokenizer lists
  the words; only queries run (``SELECT``, ``WITH``, ``FROM``-first, ``VALUES``, ``TABLE``,
  ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``PIVOT``, ``EXPLAIN`` of a query and ``CALL`` of a
  table function). Whatever defines, drops, alters or writes (``CREATE``, ``DROP``,
  ``ALTER``, ``INSERT``, ``UPDATE``, ``DELETE``, ``CHECKPOINT``, transactions), touches
  files, settings or extensions (``COPY``, ``EXPORT``, ``ATTACH``, ``SET``, ``PRAGMA``...),
  file-reading functions (``read_text``, ``glob``, ``read_csv``...) and a file named after
  ``FROM``/``JOIN`` are refused with one line. So one session's statement cannot break the
  next (a ``DROP VIEW images`` did), and a saved statement reruns the same anywhere.

Statements run in a helper thread under a time limit (:data:`DEFAULT_TIMEOUT`); SIGINT in
the calling (main) thread, or :meth:`SqlConnection.interrupt` from any thread (the TUI's
Esc), stops DuckDB at once. Results are capped in rows and bytes, so a ``SELECT * FROM
range(3e9)`` cannot grow the process.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from .errors import BundleError, QueryError

TABLES = ("images", "cases", "image_reports")
#: The in-memory catalog holding the loaded tables; the views of :data:`TABLES` read it.
CATALOG = "medpix_bundle"
#: Seconds a statement may run (the CLI's ``--timeout``).
DEFAULT_TIMEOUT = 30.0
#: DuckDB's own limit; with no temp directory it cannot spill, so a bigger need is an error.
MEMORY_LIMIT = "512MB"
#: The limit while the tables load (then :data:`MEMORY_LIMIT`, or what they took plus room).
LOAD_MEMORY_LIMIT = "4GB"
#: Rows and (approximate) bytes a result may hold in Python; more is an error, never a swap.
MAX_RESULT_ROWS = 100_000
MAX_RESULT_BYTES = 256 * 1024 * 1024
#: Longest statement text accepted.
MAX_SQL_CHARS = 100_000

#: Statement types that only read (a PIVOT without an IN list is a MULTI: see :func:`_is_query`).
_ALLOWED_TYPES = {"SELECT", "EXPLAIN", "CALL", "MULTI"}
_READ_ONLY = "SQL is read-only"
_QUERIES_ONLY = "only queries (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT, EXPLAIN) run here"
_REFUSED_TYPES = {
    "COPY": "COPY reads or writes files", "EXPORT": "EXPORT writes files", "ATTACH": "ATTACH opens databases",
    "DETACH": "DETACH changes the databases", "LOAD": "INSTALL and LOAD change extensions",
    "SET": "SET, RESET and USE change settings", "PRAGMA": "PRAGMA and IMPORT change settings or read files",
    "PREPARE": "PREPARE is not supported here", "EXECUTE": "EXECUTE is not supported here",
    "VACUUM": "VACUUM and ANALYZE are not needed here",
}
#: Statement types that define, drop, alter or write; the word names them in the refusal.
_WRITE_TYPES = {"CREATE": "CREATE", "CREATE_FUNC": "CREATE", "DROP": "DROP", "ALTER": "ALTER", "INSERT": "INSERT",
                "UPDATE": "UPDATE", "DELETE": "DELETE", "MERGE_INTO": "MERGE", "TRANSACTION": "a transaction",
                "COPY_DATABASE": "COPY", "VARIABLE_SET": "SET VARIABLE"}
#: Table and scalar functions that read files or run SQL given as a string.
_FILE_FUNCTIONS = {"glob", "query", "query_table", "sniff_csv", "iceberg_scan", "iceberg_metadata", "delta_scan",
                   "sqlite_scan", "sqlite_attach", "postgres_scan", "mysql_scan", "load_aws_credentials",
                   # run SQL given as data, reach Python objects, or change logging, profiling and resources
                   "json_execute_serialized_sql", "python_map_function", "pandas_scan", "arrow_scan", "arrow_scan_dumb",
                   "python_arrow_scan", "enable_logging", "disable_logging", "truncate_duckdb_logs", "enable_profiling",
                   "disable_profiling", "create_external_resource", "register_external_resource",
                   "register_external_resource_type", "deregister_external_resource", "destroy_external_resource",
                   "add_grammar_extension", "remove_grammar_extension", "which_secret",
                   # write the database (CHECKPOINT runs these)
                   "checkpoint", "force_checkpoint"}
_FILE_PREFIXES = ("read_", "parquet_", "sniff_", "sqlite_", "postgres_", "mysql_", "iceberg_", "delta_", "arrow_scan")
#: Functions whose output grows with a number argument. DuckDB builds a whole vector of
#: such values outside its memory limit (``repeat('x', 1e8)`` over 100 rows took 10 GB),
#: so each is shadowed by a macro that refuses results longer than :data:`MAX_INFLATE`
#: (elements or characters); calling the originals as ``system.main.*`` is refused.
MAX_INFLATE = 10_000
_GUARDS = {  # name: [(parameters, size of the result, the call with the size-bearing argument as {})]
    "repeat": [("s, n", "n * greatest(length(s), 1)", "repeat(s, {n})")],
    "lpad": [("s, n, p", "n", "lpad(s, {n}, p)")],
    "rpad": [("s, n, p", "n", "rpad(s, {n}, p)")],
    "list_resize": [("l, n", "n", "list_resize(l, {n})"), ("l, n, v", "n", "list_resize(l, {n}, v)")],
    "array_resize": [("l, n", "n", "array_resize(l, {n})"), ("l, n, v", "n", "array_resize(l, {n}, v)")],
    "range": [("a", "a", "range({a})"), ("a, b", "b - a", "range(a, {b})"),
              ("a, b, c", "(b - a) / c", "range(a, {b}, c)")],
    "generate_series": [("a", "a", "generate_series({a})"), ("a, b", "b - a", "generate_series(a, {b})"),
                        ("a, b, c", "(b - a) / c", "generate_series(a, {b}, c)")],
}
_FORMATTING = {"printf", "format", "bar"}
#: Growth of the process's resident memory while a statement runs before it is stopped.
MAX_RSS_GROWTH = 512 * 1024 * 1024


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _words(text: str) -> list[tuple[str, str]]:
    """(text, kind) of each token DuckDB's tokenizer finds, comments left out."""
    tokens = duckdb.tokenize(text)
    out = []
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        if kind.name != "comment":
            out.append((text[start:end].strip(), kind.name))
    return out


def _name(word: str) -> str:
    """An identifier as DuckDB resolves it: quotes removed, case folded."""
    if len(word) >= 2 and word[0] == word[-1] == '"':
        word = word[1:-1].replace('""', '"')
    return word.lower()


def _check_statement(text: str, kind: str) -> None:
    if kind in _REFUSED_TYPES:
        raise QueryError(f"SQL statement not allowed: {_REFUSED_TYPES[kind]}; "
                         "only queries over the bundle's tables run here")
    words = _words(text)
    upper = [w.upper() if k == "keyword" else "" for w, k in words]
    if kind in _WRITE_TYPES or kind == "MULTI" and not _is_query(text):
        what = _WRITE_TYPES.get(kind) or ("CREATE" if upper[:1] == ["CREATE"] else "this statement")
        if what == "CREATE":  # name what it creates: CREATE SECRET, CREATE TABLE...
            what = " ".join([u for u in upper[:6] if u not in ("", "OR", "REPLACE", "TEMP", "TEMPORARY")][:2])
        raise QueryError(f"{_READ_ONLY}: {what} not allowed; {_QUERIES_ONLY}")
    if kind not in _ALLOWED_TYPES:
        raise QueryError(f"SQL statement not allowed ({kind.lower()}); only queries over the bundle's tables run here")
    if kind == "CALL" and upper[:1] != ["CALL"]:  # CHECKPOINT and FORCE CHECKPOINT are CALLs of a writer
        raise QueryError(f"{_READ_ONLY}: {' '.join(u for u in upper[:2] if u)} not allowed; {_QUERIES_ONLY}")
    if kind == "EXPLAIN":  # EXPLAIN ANALYZE runs its statement: check that one too
        rest = text[text.upper().index("EXPLAIN") + len("EXPLAIN"):].lstrip()
        if rest.upper().startswith("ANALYZE"):
            rest = rest[len("ANALYZE"):]
        check_sql(rest)
    in_from = _from_clauses(words, upper)
    for i, (word, wkind) in enumerate(words):
        follows = words[i + 1][0] if i + 1 < len(words) else ""
        if wkind in ("identifier", "keyword") and follows == "(":
            fn = _name(word).rsplit(".", 1)[-1]
            if fn in _FILE_FUNCTIONS or fn.startswith(_FILE_PREFIXES):
                raise QueryError(f"SQL function {fn}() not allowed: SQL here reads only the bundle's tables "
                                 f"({', '.join(TABLES)})")
            if fn in _GUARDS and i and words[i - 1][0] == ".":
                raise QueryError(f"SQL {fn}() must be called by its plain name (its results are limited to "
                                 f"{MAX_INFLATE} elements or characters)")
            if fn in _FORMATTING:
                _check_widths(fn, words, i + 1)
        if (wkind == "string_const" and i
                and (upper[i - 1] in _TAKES_A_TABLE or (words[i - 1][0] == "," and in_from[i]))):
            raise QueryError(f"SQL may not read files ({word[:60]} in a FROM clause or as a table); "
                             f"query the bundle's tables ({', '.join(TABLES)})")


def _is_query(text: str) -> bool:
    """Whether ``text`` (one statement) is a query: DuckDB parses it as a subquery.

    A PIVOT without an IN list is a MULTI statement, as is a ``CREATE TABLE ... AS PIVOT``;
    only the first parses inside ``SELECT * FROM (...)``. The statement parsed alone, so its
    brackets balance and it cannot close the one around it; a trailing ``--`` comment ends
    at the newline.
    """
    tokens = duckdb.tokenize(text)
    ends = [tokens[i + 1][0] if i + 1 < len(tokens) else len(text) for i in range(len(tokens))]
    body = [(start, end) for (start, kind), end in zip(tokens, ends, strict=True)
            if kind.name != "comment" and text[start:end].strip(" \t\r\n;")]
    if not body:
        return False
    try:  # without the statement's closing semicolons, which would end the subquery
        wrapped = duckdb.extract_statements(f"SELECT * FROM (\n{text[:body[-1][1]]}\n)")
    except (duckdb.Error, ValueError):
        return False
    return len(wrapped) == 1 and wrapped[0].type.name in ("SELECT", "MULTI")


#: Keywords after which a string names a table, that is a file (DuckDB's replacement scans).
_TAKES_A_TABLE = {"FROM", "JOIN", "SUMMARIZE", "DESCRIBE", "SHOW", "PIVOT", "UNPIVOT", "TABLE", "INTO", "UPDATE"}
_CLAUSE_ENDS = {"WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "QUALIFY", "WINDOW", "UNION", "EXCEPT", "INTERSECT",
                "ON", "USING", "SELECT", "RETURNING", "OFFSET", "SET", "VALUES"}


def _from_clauses(words: list[tuple[str, str]], upper: list[str]) -> list[bool]:
    """For each word, whether it sits directly in a FROM list (where ``, 'file.csv'`` names a file)."""
    inside = [False]
    out = []
    for (word, _), key in zip(words, upper, strict=True):
        out.append(inside[-1])
        if word == "(":
            inside.append(False)
        elif word == ")" and len(inside) > 1:
            inside.pop()
        elif key in ("FROM", "JOIN"):
            inside[-1] = True
        elif key in _CLAUSE_ENDS:
            inside[-1] = False
    return out


def _check_widths(fn: str, words: list[tuple[str, str]], open_at: int) -> None:
    """Refuse ``printf('%0100000000d', 1)`` and kin: a width beyond :data:`MAX_INFLATE` in the call."""
    depth = 0
    for word, kind in words[open_at:]:
        depth += (word == "(") - (word == ")")
        if depth <= 0:
            return
        if kind in ("string_const", "numeric_const"):
            for digits in re.findall(r"\d+", word):
                if int(digits[:12]) > MAX_INFLATE:
                    raise QueryError(f"SQL {fn}() with a width of {digits[:12]} not allowed (limit {MAX_INFLATE})")


def check_sql(query: str) -> list[Any]:
    """DuckDB's statements of ``query``, each one allowed; else :class:`QueryError` saying why."""
    if not isinstance(query, str):
        raise QueryError("SQL must be text")
    if len(query) > MAX_SQL_CHARS:
        raise QueryError(f"SQL too long ({len(query)} characters, limit {MAX_SQL_CHARS})")
    if "\x00" in query:
        raise QueryError("SQL may not contain NUL characters")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes that were not UTF-8 on the command line (surrogate escapes)
        raise QueryError(f"SQL is not valid UTF-8 text (character {exc.start})") from None
    try:
        statements = duckdb.extract_statements(query)
        kinds = [s.type.name for s in statements]
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_first_line(exc)}") from None
    except ValueError:  # a statement type this duckdb's Python module cannot even name
        raise QueryError("SQL statement not allowed; only queries over the bundle's tables run here") from None
    if not statements:
        raise QueryError("empty SQL statement (only ';' or comments): nothing to run")
    for statement, kind in zip(statements, kinds, strict=True):
        _check_statement(statement.query, kind)
    return statements


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _approx_size(value: Any) -> int:
    """Bytes a fetched value roughly holds in Python (for the result cap)."""
    if isinstance(value, (str, bytes)):
        return 49 + len(value)
    if isinstance(value, dict):
        return 64 + sum(_approx_size(k) + _approx_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 56 + sum(_approx_size(v) for v in value)
    return 32


def _rss() -> int | None:
    """Resident bytes of this process (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _name_thread(name: str) -> None:
    """Name the calling OS thread (Linux), so ``top -H`` and tests can see a statement running."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Cancelled(QueryError):
    """A statement stopped by its user (Esc, or a newer statement in its place): no fault of its text."""


class Preview(NamedTuple):
    """Columns and (the first) rows of a result, and its row count (up to ``max_rows + 1``)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    total: int
    #: DuckDB's type of each column (``DECIMAL(4,2)``, ``MAP(VARCHAR, INTEGER)``), so a save keeps them.
    types: tuple[str, ...] = ()


class SqlConnection:
    """An in-memory DuckDB over the bundle's tables, sandboxed; run statements with :meth:`run`."""

    def __init__(self, raw: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
        self.raw = raw
        self.memory_limit = memory_limit
        self._why: str | None = None
        self._running = threading.Event()
        self._idle = threading.Event()
        self._idle.set()

    def interrupt(self, why: str = "cancelled") -> bool:
        """Stop the running statement (any thread); False when none runs."""
        if not self._running.is_set():
            return False
        self._why = why
        self.raw.interrupt()
        return True

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def close(self) -> None:
        """Stop any running statement, then close DuckDB."""
        self.interrupt("cancelled")
        self._idle.wait(5)
        try:
            self.raw.close()
        except duckdb.Error:  # still busy after the wait: the process is ending anyway
            pass

    def run(self, query: str, *, limit: int | None = None, timeout: float | None = DEFAULT_TIMEOUT,
            max_rows: int = MAX_RESULT_ROWS) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Check and run ``query`` (one or more statements); the last one's columns and rows.

        ``limit`` keeps the first rows only (a screen's worth); without it more than
        ``max_rows`` rows is an error. ``timeout`` (seconds, None for none) stops DuckDB.
        """
        result = self.result(query, limit=limit, timeout=timeout, max_rows=max_rows)
        return result.columns, result.rows

    def result(self, query: str, *, limit: int | None = None, timeout: float | None = DEFAULT_TIMEOUT,
               max_rows: int = MAX_RESULT_ROWS) -> Preview:
        """:meth:`run`'s answer with the columns' types (a save writes them); ``total`` is the rows kept."""
        return self._run(query, limit, timeout, max_rows, count=False)

    def preview(self, query: str, rows: int, *, timeout: float | None = DEFAULT_TIMEOUT,
                max_rows: int = MAX_RESULT_ROWS) -> Preview:
        """The first ``rows`` rows of ``query`` and how many the whole result has, counted up to
        ``max_rows + 1``: a screen can then say truthfully whether a full run (an export) would fit."""
        return self._run(query, rows, timeout, max_rows, count=True)

    def _run(self, query: str, limit: int | None, timeout: float | None, max_rows: int, *,
             count: bool) -> Preview:
        statements = check_sql(query)
        if timeout is not None and timeout <= 0:
            raise QueryError("the SQL time limit must be positive")
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            _name_thread("medpix-sql")
            try:
                outcome["result"] = self._execute(statements, limit, max_rows, count)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                outcome["error"] = exc
            finally:
                done.set()

        self._why = None
        self._running.set()
        self._idle.clear()
        thread = threading.Thread(target=work, name="medpix-sql", daemon=True)
        try:
            thread.start()
            self._watch(done, timeout)
        except KeyboardInterrupt:
            self.interrupt("interrupted")
            self._until_stopped(done)
            raise
        finally:
            self._running.clear()
            self._idle.set()
        error = outcome.get("error")
        if error is not None:
            raise self._error(error, timeout) from None
        result: Preview = outcome["result"]
        return result

    def _watch(self, done: threading.Event, timeout: float | None) -> None:
        """Wait for ``done``; stop DuckDB at the time limit, when memory grows past
        :data:`MAX_RSS_GROWTH`, or once :meth:`interrupt` was called from another thread."""
        start_rss = _rss()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _waited(done):
            if self._why is not None:
                break
            rss = _rss()
            if start_rss is not None and rss is not None and rss - start_rss > MAX_RSS_GROWTH:
                self.interrupt("memory")
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.interrupt("timeout")
                break
        self._until_stopped(done)

    def _until_stopped(self, done: threading.Event) -> None:
        """Interrupt DuckDB until the statement ends. One interrupt is lost when it comes before
        DuckDB has begun the statement (seen on a loaded host: a SIGINT the process never obeyed)."""
        while not _waited(done):
            if self._why is not None:
                self.raw.interrupt()

    def _execute(self, statements: list[Any], limit: int | None, max_rows: int, count: bool) -> Preview:
        rel: Any = None
        for statement in statements:
            rel = self.raw.execute(statement)
        if rel is None or rel.description is None:
            return Preview([], [], 0)
        columns = [d[0] for d in rel.description]
        types = tuple(str(d[1]) for d in rel.description)
        wanted = limit if limit is not None else max_rows + 1
        rows: list[tuple[Any, ...]] = []
        size = 0
        while len(rows) < wanted:
            chunk = rel.fetchmany(min(1024, wanted - len(rows)))
            if not chunk:
                break
            size += sum(_approx_size(row) for row in chunk)
            rows.extend(chunk)
            if size > MAX_RESULT_BYTES:
                raise QueryError(f"SQL result too large (over {MAX_RESULT_BYTES >> 20} MB); "
                                 "select fewer rows or columns")
        if limit is None and len(rows) > max_rows:
            raise QueryError(f"SQL result has more than {max_rows} rows; add a LIMIT or an aggregate")
        total = len(rows)
        while count and len(rows) == wanted and total <= max_rows:  # count the rest, keeping none
            chunk = rel.fetchmany(min(2048, max_rows + 1 - total))
            if not chunk:
                break
            total += len(chunk)
        return Preview(columns, rows, total, types)

    def _error(self, exc: BaseException, timeout: float | None) -> BaseException:
        if isinstance(exc, QueryError):
            return exc
        if isinstance(exc, duckdb.InterruptException) or self._why:
            if self._why == "memory":
                return QueryError(f"SQL statement stopped: it needed more than {MAX_RSS_GROWTH >> 20} MB of memory; "
                                  "narrow it")
            if self._why == "timeout":
                return QueryError(f"SQL statement stopped at the {timeout:g} s time limit (--timeout)")
            return Cancelled("SQL statement cancelled")
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryError(f"SQL statement needs more than the {self.memory_limit} memory limit; narrow it")
        if isinstance(exc, duckdb.Error):
            return QueryError(f"SQL error: {_first_line(exc)}")
        if isinstance(exc, MemoryError):
            return QueryError("SQL result too large for memory; select fewer rows or columns")
        return exc


def _waited(done: threading.Event, step: float = 0.02) -> bool:
    """Whether ``done`` is set, after a short sleep if it is not yet. Event.wait takes a lock: an
    exception raised by a signal handler (Ctrl-C, the CLI's SIGTERM) in the middle of it left that
    lock broken, and the next wait said "internal error (RuntimeError: release unlocked lock)"."""
    if done.is_set():
        return True
    time.sleep(step)
    return done.is_set()


def _guarded(fn: str, size: str, call: str) -> str:
    """``call`` with its ``{arg}`` replaced by ``arg``, or an error when ``size`` exceeds :data:`MAX_INFLATE`."""
    refuse = f"error({_quote(f'{fn}() result longer than {MAX_INFLATE} elements or characters')})"
    return re.sub(r"\{(\w+)\}", lambda m: f"CASE WHEN ({size}) > {MAX_INFLATE} THEN {refuse} ELSE {m[1]} END", call)


def connect(parquet_dir: Path, *, memory_limit: str | None = None) -> SqlConnection:
    """An in-memory DuckDB holding the bundle's three tables, confined as the module says.

    The Parquet files are read here, read-only; afterwards no statement can open a file.
    ``memory_limit`` defaults to :data:`MEMORY_LIMIT` or, for a bundle whose tables take more
    (the release's take 26 MB; a x30 copy about 800 MB), what they take plus 256 MB for statements.
    """
    folder = Path(parquet_dir).resolve()
    for name in TABLES:
        if not (folder / f"{name}.parquet").is_file():
            raise BundleError(f"bundle has no {name}.parquet (rebuild it with 'medpix-tui bundle build')")
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False, "memory_limit": memory_limit or LOAD_MEMORY_LIMIT,
        # no spilling to disk at all, from the start: set after the load, DuckDB refuses once the big
        # tables of a x30 bundle have used the default temporary folder
        "temp_directory": "",
        "threads": max(1, min(4, os.cpu_count() or 1))}
    con = duckdb.connect(":memory:", config=config)
    try:
        # DuckDB draws a progress bar on stdout once a statement runs 2 s (a loaded host, a x30
        # bundle's load): it would land in the CLI's CSV or JSON and across the terminal UI
        con.execute("SET enable_progress_bar = false")
        con.execute(f"ATTACH ':memory:' AS {CATALOG}")
        for name in TABLES:
            parquet = _quote(str(folder / (name + ".parquet")))
            con.execute(f"CREATE TABLE {CATALOG}.{name} AS SELECT * FROM read_parquet({parquet})")
            con.execute(f"CREATE VIEW main.{name} AS SELECT * FROM {CATALOG}.{name}")
        for fn, overloads in _GUARDS.items():
            con.execute(f"CREATE MACRO main.{fn}" + ", ".join(f"({params}) AS system.main.{_guarded(fn, size, call)}"
                                                            for params, size, call in overloads))
        if memory_limit is None:
            loaded = con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchone()
            tables_mb = int(loaded[0] if loaded else 0) >> 20
            memory_limit = f"{max(int(MEMORY_LIMIT.removesuffix('MB')), tables_mb + 256)}MB"
        for setting in (f"memory_limit = '{memory_limit}'", "python_enable_replacements = false",
                        "enable_external_access = false", "lock_configuration = true"):
            con.execute(f"SET {setting}")
    except duckdb.Error as exc:
        con.close()
        raise BundleError(f"cannot read the bundle's Parquet in {folder}: {_first_line(exc)} "
                          "(check it with 'medpix-tui bundle verify')") from None
    return SqlConnection(con, memory_limit)


def run_sql(con: SqlConnection, query: str, *, limit: int | None = None, timeout: float | None = DEFAULT_TIMEOUT,
            max_rows: int = MAX_RESULT_ROWS) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` on ``con`` (see :meth:`SqlConnection.run`)."""
    return con.run(query, limit=limit, timeout=timeout, max_rows=max_rows)


def explain_text(columns: list[str], rows: list[tuple[Any, ...]]) -> str | None:
    """The plan of an EXPLAIN answer (DuckDB's two columns, a plan per row), to show line by line
    rather than as one cell; None for any other answer."""
    if columns != ["explain_key", "explain_value"] or not rows:
        return None
    return "\n".join(str(row[1]) for row in rows)


def arrow_types(types: Sequence[str]) -> list[Any]:
    """The Arrow type DuckDB gives each of its ``types`` (None where it gives none), so a saved
    Parquet keeps ``DECIMAL(4,2)``, a MAP or an INTERVAL as DuckDB has them rather than as
    pyarrow would guess from Python values."""
    con = duckdb.connect(config={"enable_external_access": False})
    out: list[Any] = []
    try:
        for sql_type in types:
            try:
                out.append(con.sql(f"SELECT NULL::{sql_type} AS c LIMIT 0").to_arrow_table().schema[0].type)
            except duckdb.Error:  # a type that cannot be cast to (NULL's own): pyarrow infers it
                out.append(None)
    finally:
        con.close()
    return out


def iso_duration(value: datetime.timedelta) -> str:
    """A duration in ISO 8601's words: ``P3DT4H30M``, ``PT0.5S``, ``-P1D`` (days as DuckDB counts them)."""
    sign, value = ("-", -value) if value < datetime.timedelta(0) else ("", value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    second = f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") if value.microseconds else str(seconds)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{second}S" if seconds or value.microseconds else ""
    days = f"{value.days}D" if value.days else ""
    return f"{sign}P{days}" + (f"T{clock}" if clock else "" if days else "T0S")


def jsonable(value: Any) -> Any:
    """A DuckDB value as a JSON value (dates, times and decimals as text; NaN and infinities,
    which JSON lacks, as null), for saved results and shown cells."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time, decimal.Decimal)):
        return str(value)
    if isinstance(value, datetime.timedelta):  # an INTERVAL as ISO 8601 ("P3DT4H"), not Python's "3 days, 4:00:00"
        return iso_duration(value)
    if isinstance(value, (bytes, bytearray, memoryview)):  # a BLOB as DuckDB writes it as text, not b'...'
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in bytes(value))
    return str(value)

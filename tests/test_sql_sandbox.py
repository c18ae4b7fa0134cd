"""The SQL sandbox (issue 23, items 1 and 8): SQL reads the bundle's Parquet and nothing else.

Every attack of the issue is here: ``COPY ... TO`` the bundle's own Parquet and into the
working folder's ``.tmp/`` (DuckDB's default temp directory), ``read_text`` of a file there,
a runaway ``count(*)`` over ``range(1e12)`` (time limit, SIGINT), ``SELECT * FROM range(3e9)``
(peak RSS), empty and comment-only statements, in the CLI and in the TUI's SQL screen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from textual.widgets import Static, TextArea

from medpix_tui.bundle import build_bundle, open_bundle
from medpix_tui.cli import main
from medpix_tui.errors import QueryError
from medpix_tui.sql import MAX_INFLATE, check_sql, connect
from tests.support import tree_digest, write_source
from tests.tui_support import SIZE, make_app, open_screen, settle, wait_for

ROOT = Path(__file__).resolve().parents[1]
RUNAWAY = "SELECT count(*) FROM range(1000000000000)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the 3-image made-up source: cheap to build, so attacks can aim at its files."""
    root = tmp_path_factory.mktemp("sqltiny")
    return build_bundle(write_source(root / "src"), root / "tiny", with_model=False)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with ``.tmp/secret.txt``: DuckDB's default temp folder, once reachable."""
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.txt").write_text("SECRET\n")
    (tmp_path / ".tmp" / "secret.csv").write_text("secret\nSECRET\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(args: list[str], expected: str, code: int = 2) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    return lines[0]


ATTACKS = {
    "copy-over-the-bundle-parquet": ("COPY (SELECT 'FORGED: no fracture, discharge' AS caption)"
                                     " TO '{parquet}/images.parquet'",
                                     "COPY reads or writes files"),
    "copy-new-file-into-the-bundle": ("COPY (SELECT 1) TO '{parquet}/extra.parquet' (FORMAT parquet)", "COPY"),
    "copy-to-dot-tmp": ("COPY (SELECT 1 AS a) TO '.tmp/out.csv'", "COPY"),
    "read-text-dot-tmp": ("SELECT * FROM read_text('.tmp/secret.txt')", "read_text() not allowed"),
    "read-blob": ("SELECT content FROM read_blob('.tmp/secret.txt')", "read_blob() not allowed"),
    "glob": ("SELECT * FROM glob('*')", "glob() not allowed"),
    "read-csv-method-call": ("SELECT '.tmp/secret.txt'.read_csv()", "read_csv() not allowed"),
    "file-after-from": ("SELECT * FROM '{parquet}/images.parquet'", "may not read files"),
    "file-after-join": ("SELECT * FROM images JOIN '.tmp/secret.txt' ON true", "may not read files"),
    "summarize-a-file": ("SUMMARIZE '.tmp/secret.csv'", "in a FROM clause"),
    "describe-a-file": ("DESCRIBE '{parquet}/images.parquet'", "in a FROM clause"),
    "file-in-from-list": ("SELECT * FROM images, '.tmp/secret.csv'", "in a FROM clause"),
    "file-in-from-list-after-alias": ("SELECT * FROM images AS a, range(2) r, '.tmp/secret.csv' s", "in a FROM clause"),
    "query-function": ("SELECT * FROM query('SELECT * FROM read_text(''.tmp/secret.txt'')')", "query() not allowed"),
    "attach": ("ATTACH '.tmp/evil.duckdb' AS evil", "ATTACH"),
    "detach": ("DETACH medpix_bundle", "DETACH"),
    "install": ("INSTALL httpfs", "INSTALL and LOAD"),
    "load": ("LOAD httpfs", "INSTALL and LOAD"),
    "set-temp-directory": ("SET temp_directory = '.tmp'", "SET, RESET and USE"),
    "set-external-access": ("SET enable_external_access = true", "SET, RESET and USE"),
    "reset": ("RESET memory_limit", "SET, RESET and USE"),
    "use": ("USE medpix_bundle", "SET, RESET and USE"),
    "pragma": ("PRAGMA enable_profiling", "PRAGMA"),
    "import-database": ("IMPORT DATABASE '.tmp'", "PRAGMA and IMPORT"),
    "export-database": ("EXPORT DATABASE '.tmp/dump'", "EXPORT writes files"),
    "create-secret": ("CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')", "CREATE SECRET"),
    "create-schema": ("CREATE SCHEMA s", "CREATE SCHEMA"),
    "explain-analyze-copy": ("EXPLAIN ANALYZE COPY (SELECT 1) TO '.tmp/out.csv'", "COPY"),
    "copy-hidden-after-select": ("SELECT 1; COPY (SELECT 1) TO '.tmp/out.csv'", "COPY"),
    "delete-the-loaded-tables": ("DELETE FROM medpix_bundle.images", "SQL is read-only: DELETE not allowed"),
    "update-extensions": ("UPDATE EXTENSIONS", "not allowed"),
    "serialized-sql": ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
                       "json_execute_serialized_sql() not allowed"),
    "enable-profiling": ("SELECT * FROM enable_profiling()", "enable_profiling() not allowed"),
    "empty": (";", "empty SQL statement"),
    "comment-only": ("/* only a comment */", "empty SQL statement"),
    "blank-and-semicolons": (" ;\n; -- nothing\n", "empty SQL statement"),
    "not-utf8-bytes": ("SELECT '\udcff'", "not valid UTF-8"),
    "nul": ("SELECT 1\x00; COPY images TO 'x'", "NUL"),
    "repeat-bomb": (f"SELECT repeat('x', {10 ** 8}) FROM range(100)", "repeat() result longer than"),
    "repeat-bomb-computed": ("SELECT repeat('x', pow(10, 8)::INT) FROM range(100)", "repeat() result longer than"),
    "range-list-bomb": ("SELECT range(pow(10, 9)::BIGINT)", "range() result longer than"),
    "unguarded-repeat": ("SELECT system.main.repeat('x', 5)", "plain name"),
    "drop-the-guard": ("DROP MACRO repeat", "SQL is read-only: DROP not allowed"),
    "printf-width-bomb": ("SELECT printf('%0100000000d', 1)", "width"),
    "three-billion-rows": ("SELECT * FROM range(3000000000)", "more than 100000 rows"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_sql_attack_is_refused_in_one_line(name: str, tiny: Path, workdir: Path) -> None:
    statement, expected = ATTACKS[name]
    before_bundle, before_work = tree_digest(tiny), tree_digest(workdir)
    one_error_line(["sql", "--bundle", str(tiny), statement.format(parquet=tiny / "parquet")], expected)
    assert tree_digest(tiny) == before_bundle, "the bundle is unchanged"
    assert tree_digest(workdir) == before_work, "nothing written in the working folder"


def test_refused_statements_never_reach_duckdb(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statement check runs first: a refused COPY does not even open the bundle."""
    monkeypatch.setattr("medpix_tui.cli.data.open_bundle_from", lambda *a: pytest.fail("bundle opened"))
    one_error_line(["sql", "--bundle", str(tiny), "COPY images TO 'x.csv'"], "COPY")


#: Statements that define, drop, alter or write (each once broke the session: after ``DROP VIEW
#: images`` the next query failed), and the word the one-line refusal names.
WRITES = {
    "DROP VIEW images": "DROP", "DROP TABLE IF EXISTS medpix_bundle.images": "DROP",
    "CREATE TABLE t AS SELECT * FROM images": "CREATE TABLE", "CREATE TEMP TABLE t AS SELECT 1": "CREATE TABLE",
    "CREATE OR REPLACE TEMP VIEW images AS SELECT 1 AS x": "CREATE VIEW", "CREATE MACRO m(x) AS x": "CREATE MACRO",
    "CREATE TEMP MACRO lower(x) AS 'hacked'": "CREATE MACRO", "CREATE FUNCTION f(x) AS x": "CREATE FUNCTION",
    "CREATE TYPE e AS ENUM ('a')": "CREATE TYPE", "CREATE SEQUENCE s": "CREATE SEQUENCE",
    "CREATE TABLE x AS PIVOT images ON modality": "CREATE TABLE", "CHECKPOINT": "CHECKPOINT",
    "FORCE CHECKPOINT": "FORCE CHECKPOINT", "ALTER VIEW images RENAME TO gone": "ALTER",
    "COMMENT ON VIEW images IS 'x'": "ALTER", "INSERT INTO medpix_bundle.images SELECT * FROM images": "INSERT",
    "UPDATE medpix_bundle.cases SET title = 'x'": "UPDATE", "TRUNCATE medpix_bundle.images": "DELETE",
    "BEGIN TRANSACTION": "a transaction", "ROLLBACK": "a transaction",
    "SELECT 1; DROP VIEW images": "DROP", "SELECT 1;; CREATE TABLE t AS SELECT 1;": "CREATE TABLE",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1": "CREATE TABLE",
    "WITH x AS (SELECT 'MR' AS m) INSERT INTO t SELECT * FROM (PIVOT x ON m)": "this statement",
}


@pytest.mark.parametrize("statement", sorted(WRITES))
def test_sql_that_defines_drops_or_writes_is_refused_as_read_only(statement: str, tiny: Path) -> None:
    con = connect(tiny / "parquet")
    with pytest.raises(QueryError, match=f"^SQL is read-only: {WRITES[statement]} not allowed; only queries"):
        con.run(statement)
    # the session is whole: the views, the loaded tables and the guards are as they were
    assert con.run("SELECT count(*) FROM images")[1] == [(3,)]
    assert con.run("SELECT lower('A'), count(*) FROM medpix_bundle.images")[1] == [("a", 3)]
    assert con.run("SELECT table_name FROM duckdb_tables() WHERE database_name <> 'medpix_bundle'")[1] == []
    one_error_line(["sql", "--bundle", str(tiny), statement], "SQL is read-only")


def test_the_cli_session_survives_a_refused_drop(tiny: Path) -> None:
    """``medpix-tui sql "DROP VIEW images; SELECT ..."`` is refused whole, before anything runs."""
    one_error_line(["sql", "--bundle", str(tiny), "DROP VIEW images; SELECT count(*) FROM images"],
                   "SQL is read-only: DROP not allowed")
    result = CliRunner().invoke(main, ["sql", "--bundle", str(tiny), "--format", "json",
                                       "SELECT count(*) n FROM images"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 3}]


def test_analysts_keep_every_kind_of_query(tiny: Path) -> None:
    con = connect(tiny / "parquet")
    assert con.run("SELECT repeat('ab', 2), lpad('7', 3, '0'), range(3), generate_series(1, 2)")[1] == \
        [("abab", "007", [0, 1, 2], [1, 2])]
    assert con.run("SELECT count(*) FROM range(200000)")[1] == [(200000,)]
    assert con.run("EXPLAIN SELECT * FROM images")[0]
    assert con.run("EXPLAIN ANALYZE SELECT count(*) FROM images")[0]
    assert con.run("DESCRIBE images")[1][0][0] == "image"
    assert con.run("VALUES (1), (2)")[1] == [(1,), (2,)]
    assert con.run("FROM images SELECT count(*)")[1] == [(3,)]
    assert con.run("WITH x AS (SELECT 2 AS n) SELECT n FROM x")[1] == [(2,)]
    assert con.run("TABLE cases")[1]
    assert con.run("SUMMARIZE images")[1]
    assert con.run("SHOW TABLES")[1]
    assert con.run("CALL pragma_version()")[1]
    pivot = con.run("PIVOT images ON modality USING count(*) GROUP BY split;")  # a PIVOT with no IN list
    assert pivot[0][0] == "split" and len(pivot[1]) >= 1
    assert con.run("SELECT * FROM (PIVOT images ON modality USING count(*)) -- a comment")[1]
    assert con.run("SELECT 1; SELECT 2")[1] == [(2,)]


def test_duckdb_itself_refuses_files(tiny: Path, workdir: Path) -> None:
    """The second wall: with the statement check bypassed, DuckDB still opens no file."""
    con = connect(tiny / "parquet").raw
    for statement in ("SELECT * FROM read_text('.tmp/secret.txt')", f"COPY images TO '{tiny}/parquet/images.parquet'",
                      "COPY (SELECT 1) TO '.tmp/x.csv'", "SELECT current_setting('temp_directory')",
                      "SELECT current_setting('python_enable_replacements')::VARCHAR"):
        try:
            rows = con.execute(statement).fetchall()
        except Exception as exc:  # noqa: BLE001 - any DuckDB refusal will do
            assert "Permission Error" in str(exc) or "disabled" in str(exc), exc
        else:
            assert rows in ([("",)], [("false",)]), "no temp directory at all, no Python objects read as tables"
    for setting in ("SET enable_external_access = true", "SET temp_directory = '.tmp'"):
        with pytest.raises(Exception, match="locked"):
            con.execute(setting)
    assert not (workdir / ".tmp" / "x.csv").exists()


def test_runaway_statement_stops_at_the_time_limit(tiny: Path) -> None:
    started = time.monotonic()
    one_error_line(["sql", "--bundle", str(tiny), "--timeout", "1", RUNAWAY], "stopped at the 1 s time limit")
    assert time.monotonic() - started < 10
    one_error_line(["sql", "--bundle", str(tiny), "--timeout", "1",
                    "SELECT count(*) FROM range(100000) a, range(100000) b, range(1000) c"], "time limit")


def test_timeout_must_be_positive(tiny: Path) -> None:
    result = CliRunner().invoke(main, ["sql", "--bundle", str(tiny), "--timeout", "0", "SELECT 1"])
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.output


def _sql_process(tiny: Path, statement: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "medpix_tui", "sql", "--bundle", str(tiny), statement],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)


def _thread_running(pid: int, name: str) -> bool:
    try:
        return any((task / "comm").read_text().strip() == name for task in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to see the statement start")
@pytest.mark.parametrize(("sent_signal", "code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                           (signal.SIGTERM, 143, "terminated"),
                                                           (signal.SIGHUP, 129, "hung up")],
                         ids=["INT", "TERM", "HUP"])  # HUP: a closed terminal, which killed the command mid-write
def test_a_signal_interrupts_a_running_statement_at_once(tiny: Path, tmp_path: Path, sent_signal: int, code: int,
                                                         said: str) -> None:
    # SIGTERM ends a command as Ctrl-C does, clean-up included (an export's temporary folder stayed behind)
    proc = _sql_process(tiny, RUNAWAY, tmp_path)
    deadline = time.monotonic() + 60
    while not _thread_running(proc.pid, "medpix-sql"):  # the statement has started in DuckDB
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(sent_signal)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - sent < 3, "the signal stops DuckDB at once"
    assert proc.returncode == code and out == "" and err.strip() == said, err


#: Runs the CLI and writes its own peak RSS (VmHWM, kB) to argv[1] at exit. wait4's ru_maxrss would
#: also count the memory of the (large) test worker the child was forked from, before its exec.
_WITH_PEAK = ("import atexit, runpy, sys\n"
              "out = sys.argv.pop(1)\n"
              "def peak():\n"
              "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
              "    open(out, 'w').write(line.split()[1])\n"
              "atexit.register(peak)\n"
              "runpy.run_module('medpix_tui', run_name='__main__')\n")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak from /proc")
def test_three_billion_rows_stay_small(tiny: Path, tmp_path: Path) -> None:
    """``SELECT * FROM range(3e9)`` once grew to 4.5 GB RSS: now one line and a bounded peak."""
    peak = tmp_path / "peak"
    run = subprocess.run([sys.executable, "-c", _WITH_PEAK, str(peak), "sql", "--bundle", str(tiny),
                          "SELECT * FROM range(3000000000)"], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL, timeout=300)
    assert run.returncode == 2 and "more than 100000 rows" in run.stderr, run.stderr
    assert int(peak.read_text()) * 1024 < 1024 ** 3, f"peak RSS {int(peak.read_text()) / 1024:.0f} MB"


@pytest.mark.parametrize("statement", ["SELECT 1", "  select modality from images limit 1; ",
                                       "WITH x AS (SELECT 1) SELECT * FROM x",
                                       "FROM images LIMIT 1", "SUMMARIZE images", "SHOW TABLES",
                                       "PIVOT images ON modality USING count(*)",
                                       "SELECT caption FROM images WHERE caption GLOB '*fracture*' LIMIT 1",
                                       "SELECT 'a', 'b' FROM images, (VALUES ('x'), ('y')) v(c)"
                                       " WHERE modality IN ('MR', 'CT')",
                                       "SELECT * FROM images i JOIN cases c ON i.u_id = c.u_id"
                                       " WHERE i.plane IN ('x', 'y') AND 'y' = 'y'"])
def test_ordinary_statements_pass_the_check(statement: str) -> None:
    assert check_sql(statement)


def test_inflating_guard_limit_is_documented() -> None:
    assert MAX_INFLATE >= 1000, "padding and small lists keep working"


# -- the TUI's SQL screen --------------------------------------------------------------------

@pytest.mark.asyncio
async def test_tui_sql_screen_shows_empty_statements_and_esc_cancels(tiny: Path) -> None:
    from medpix_tui.tui.screens.sql import SqlScreen

    app = make_app(open_bundle(tiny))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        status = screen.query_one("#sql-status", Static)
        for statement in (";", "/* only a comment */"):
            screen.query_one("#editor", TextArea).load_text(statement)
            await pilot.press("ctrl+j")
            await settle(pilot)
            assert "empty SQL statement" in str(status.render())
        screen.query_one("#editor", TextArea).load_text("COPY (SELECT 1) TO 'out.csv'")
        await pilot.press("ctrl+j")
        await settle(pilot)
        assert "COPY reads or writes files" in str(status.render())

        screen.query_one("#editor", TextArea).load_text(RUNAWAY)
        await pilot.press("ctrl+j")
        await wait_for(pilot, lambda: screen._con is not None and screen._con.running)
        pressed = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: "SQL statement cancelled" in str(status.render()), timeout=10)
        assert time.monotonic() - pressed < 3
        assert app.is_running and app.screen is screen
        # stopped is not failed: the history marked it "✗ failed"
        assert RUNAWAY in screen._history and RUNAWAY not in screen._failed
        assert "COPY (SELECT 1) TO 'out.csv'" in screen._failed


def test_history_file_is_bounded_and_validated(tmp_path: Path) -> None:
    """The SQL history lives in the user's data folder: a bad or huge file is an empty history, never a crash."""
    from medpix_tui.tui.screens.sql import HISTORY_LIMIT, _read_history

    path = tmp_path / "history.json"
    for content in (b"5", b'{"a": 1}', b"[" * 100_000, b"\xff\xfe", b'["' + b"x" * (HISTORY_LIMIT + 1) + b'"]'):
        path.write_bytes(content)
        assert _read_history(path) == ([], set())
    path.write_text(json.dumps(["SELECT 1", 7, None, "", "x" * 200_000, {"sql": "SELECT 2", "failed": True}]))
    assert _read_history(path) == (["SELECT 1", "SELECT 2"], {"SELECT 2"})


def test_a_slow_statement_draws_no_progress_bar_on_stdout(tiny: Path) -> None:
    # Seen on a loaded 2-core host: DuckDB drew its progress bar ("▕███▏ (00:00:02.8 elapsed)") on
    # stdout in the middle of a reader's output once a statement ran past 2 s. Asking DuckDB to
    # draw it after 0 ms makes any statement slow enough, on any host.
    script = (
        "import duckdb\n"
        "real = duckdb.connect\n"
        "def eager(*args, **kwargs):\n"
        "    con = real(*args, **kwargs)\n"
        "    con.execute('SET progress_bar_time = 0')\n"
        "    return con\n"
        "duckdb.connect = eager\n"
        "from medpix_tui.sql import connect\n"
        f"con = connect({str(tiny / 'parquet')!r})\n"
        "print('connected', flush=True)\n"  # with a 0 ms wait the SET turning the bar off draws one
        "print(con.run('SELECT count(*) FROM range(30000000) a WHERE a.range % 7 = 3')[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("connected\n", 1)[1] == "[(4285714,)]\n" and "▕" not in out.stderr


def test_a_cancel_before_duckdb_begins_the_statement_is_not_lost(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen on a loaded host: SIGINT came after the statement's thread started but before DuckDB
    # began the statement; the one interrupt was lost and the runaway statement went on. Here the
    # cancel (the TUI's Esc) always comes in that gap.
    from medpix_tui.sql import SqlConnection

    con = connect(tiny / "parquet")
    real = SqlConnection._execute
    cancelled = threading.Event()

    def late(self: SqlConnection, *args: object) -> object:
        assert self.interrupt("cancelled")
        cancelled.set()
        return real(self, *args)

    monkeypatch.setattr(SqlConnection, "_execute", late)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            con.run(RUNAWAY, timeout=None)
        except QueryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(120)  # without the fix it runs for hours: the join gives up and the test fails
    assert cancelled.is_set() and not worker.is_alive(), "the cancelled statement stopped"
    assert outcome and "cancelled" in str(outcome[0])


def test_results_are_text_and_json_not_markup_or_nan(tiny: Path) -> None:
    # the release's discussions hold "[see comments]" and "[e.g. sarcoidosis]"; Rich read them as tags
    statement = "SELECT '[/x]' s, '[e.g. sarcoidosis]' t, 1.0/0 inf, cast('nan' AS DOUBLE) nan, 2 \"[/b]\""
    result = CliRunner().invoke(main, ["sql", "--bundle", str(tiny), statement])
    assert result.exit_code == 0, result.output
    assert "[/x]" in result.stdout and "[e.g. sarcoidosis]" in result.stdout and "[/b]" in result.stdout
    result = CliRunner().invoke(main, ["sql", "--bundle", str(tiny), "--format", "json", statement])
    assert result.exit_code == 0
    rows = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert rows == [{"s": "[/x]", "t": "[e.g. sarcoidosis]", "inf": None, "nan": None, "[/b]": 2}]


@pytest.mark.asyncio
async def test_tui_sql_screen_shows_brackets_as_written(tiny: Path) -> None:
    from textual.widgets import DataTable

    from medpix_tui.tui.screens.sql import SqlScreen

    app = make_app(open_bundle(tiny))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        screen.query_one("#editor", TextArea).load_text("SELECT '[see comments]' AS \"[/b]\"")
        await pilot.press("ctrl+j")
        table = screen.query_one("#sql-results", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        assert [str(c.label) for c in table.columns.values()] == ["[/b]"]
        assert str(table.get_row_at(0)[0]) == "[see comments]"
        assert app.is_running


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_on_stdout_is_one_line(tiny: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "medpix_tui", "sql", "--bundle", str(tiny), "SELECT 1"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: cannot write the output: No space left on device"

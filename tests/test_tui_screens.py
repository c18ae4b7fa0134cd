"""Pilot tests of the SQL and statistics screens, help, the command palette and themes."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, Static, TextArea
from tui_support import SIZE, make_app, open_screen, settle, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.sql import connect, run_sql
from medpix_tui.store import IMAGES
from medpix_tui.tui.screens.dialogs import SaveDialog
from medpix_tui.tui.screens.help import HelpScreen
from medpix_tui.tui.screens.sql import SqlScreen
from medpix_tui.tui.screens.stats import StatsScreen
from tests.support import check_one_file_save

pytestmark = pytest.mark.asyncio

QUERY = "SELECT location_category, count(*) AS n FROM images WHERE modality = 'MR' GROUP BY 1 ORDER BY 2 DESC, 1"


async def test_sql_runs_shows_history_exports_and_reports_errors(real_bundle: Bundle, tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    app = make_app(real_bundle, save_dir=tmp_path)
    app.history_path = history
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        assert screen.query_one("#schema").root.children  # tables listed
        assert screen.query_one("#editor", TextArea).language == "sql", "the editor highlights SQL"
        screen.query_one("#editor", TextArea).load_text(QUERY)
        await pilot.press("ctrl+j")
        await settle(pilot)
        columns, rows = run_sql(connect(real_bundle.parquet_dir), QUERY)
        table = screen.query_one("#sql-results", DataTable)
        assert [str(c.label) for c in table.columns.values()] == columns
        assert ([tuple(str(v) for v in table.get_row_at(i)) for i in range(table.row_count)]
                == [tuple(str(v) for v in r) for r in rows])
        assert str(screen.query_one("#sql-status", Static).render()).startswith(f"{len(rows)} rows")
        assert json.loads(history.read_text())[0] == QUERY
        assert screen.query_one("#history", OptionList).option_count == 1

        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-path", Input).value = "mr.json"
        await pilot.press("enter")
        await settle(pilot)
        assert json.loads((tmp_path / "mr.json").read_text()) == [dict(zip(columns, r, strict=True)) for r in rows]

        screen.query_one("#editor", TextArea).load_text("SELECT nope FROM images")
        await pilot.press("f5")
        await settle(pilot)
        assert "SQL error" in str(screen.query_one("#sql-status", Static).render())
        assert any(n.severity == "error" and "SQL error" in n.message for n in app._notifications)
        assert table.row_count == 0 and not table.columns  # the last answer's rows would read as this one's

        # the failed statement is kept too, first and marked, so it can be fixed rather than retyped
        assert json.loads(history.read_text())[:2] == [{"sql": "SELECT nope FROM images", "failed": True}, QUERY]
        entries = screen.query_one("#history", OptionList)
        assert entries.option_count == 2 and "failed" in str(entries.get_option_at_index(0).prompt)
        assert str(entries.get_option_at_index(1).prompt) == QUERY.strip()  # the whole statement, lines kept
        await pilot.press("f8", "down", "enter")  # recall the good query from history
        assert screen.query_one("#editor", TextArea).text == QUERY

        await pilot.press("ctrl+j")
        await settle(pilot)
        await pilot.press("ctrl+s")  # and as CSV
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        dialog = app.screen
        dialog.query_one("#save-what").focus()
        await pilot.press("down", "down", "down", "enter")
        assert dialog.query_one("#save-path", Input).value == "medpix-sql.csv"
        dialog.query_one("#save-path", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "medpix-sql.csv").is_file())
        import csv

        with (tmp_path / "medpix-sql.csv").open(newline="") as f:
            assert list(csv.reader(f)) == [columns] + [[str(v) for v in r] for r in rows]
        # each export has its manifest: the statement, which --from-manifest runs again read-only
        (tmp_path / "again").mkdir()
        for name in ("mr.json", "medpix-sql.csv"):
            manifest = check_one_file_save(real_bundle, tmp_path / name, tmp_path / "again" / name)
            assert manifest["kind"] == "sql" and manifest["sql"] == QUERY and manifest["query"] is None
            assert manifest["counts"] == {"rows": len(rows), "columns": len(columns), "files": 1}
            assert "medpix_tui.sql" in manifest["note"]

        await pilot.press("f2")  # back to search, and again to SQL: the screen is kept
        await pilot.press("f3")
        assert app.screen is screen

        # the editor binds F6 and F7 itself (select line, select all): the app's keys win
        screen.query_one("#editor", TextArea).focus()
        await pilot.press("f7")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryDialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        await pilot.press("f6")
        await wait_for(pilot, lambda: app.current_mode == "quiz")  # its deck dialog opens first


async def test_stats_for_the_bundle_then_the_results(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, StatsScreen))
        await settle(pilot)
        summary = str(app.screen.query_one("#stats-summary", Static).render())
        assert f"Images      {real_bundle.store.count(IMAGES)}" in summary
        assert "Whole bundle" in str(app.screen.query_one("#stats-scope", Static).render())
        await pilot.press("r")
        await settle(pilot)
        assert "Current results" in str(app.screen.query_one("#stats-scope", Static).render())

        await pilot.press("f2")
        app.screen.query_one("#keywords", Input).value = "fracture"
        await settle(pilot, 0.05)
        n = len(app.result.images)
        await pilot.press("f4")
        await settle(pilot)
        assert f"Current results ({n} images)" in str(app.screen.query_one("#stats-scope", Static).render())

        await pilot.press("r", "f2")  # an empty result has nothing to count: the scope stays the bundle
        app.screen.query_one("#keywords", Input).value = "zzqxv"
        await settle(pilot, 0.05)
        assert app.result is not None and not app.result.images
        await pilot.press("f4", "r")
        await settle(pilot)
        assert "Whole bundle" in str(app.screen.query_one("#stats-scope", Static).render())
        assert any("No search results yet" in n.message for n in app._notifications)


async def test_help_palette_and_theme(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("Markdown").source
        assert "Keys here" in text and "Save the results" in text and "Everywhere" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Open case", "Save", "Reset", "Facets", "Similar images", "Search by meaning", "Help", "SQL", "Stats",
                "Light/dark"} <= titles

        assert app.current_theme.dark
        await pilot.press("ctrl+t")
        assert not app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark

        app.screen.query_one("#results").focus()
        await pilot.press("question_mark")  # "?" helps wherever it is not typed into a box
        assert isinstance(app.screen, HelpScreen)


def footer_fits(app, width: int) -> list[str]:
    """The footer's keys left to right, checked to fit ``width`` without running under the palette key."""
    from textual.widgets._footer import FooterKey

    from medpix_tui.tui.widgets.footer import KeyFooter

    footer = app.screen.query_one(KeyFooter)
    keys = sorted((k for k in footer.query(FooterKey) if k.display), key=lambda k: k.region.x)
    shown = [str(k.description) for k in keys]
    assert footer.compact == (width < 100)
    assert len(keys) >= 4 and "palette" in shown and "Quit" in shown, shown
    assert keys[-1].region.right <= width, shown
    for left, right in itertools.pairwise(keys):  # the palette key is docked right: nothing may run under it
        assert left.region.right <= right.region.x, (str(left.description), str(right.description))
    return shown


@pytest.mark.parametrize("width", [80, 120])
async def test_every_footer_key_fits_the_terminal(real_bundle: Bundle, width: int) -> None:
    from medpix_tui.tui.screens.case import CaseScreen
    from medpix_tui.tui.screens.image import ImageScreen

    app = make_app(real_bundle)
    async with app.run_test(size=(width, 24)) as pilot:
        await settle(pilot)
        for key, mode in (("f3", "sql"), ("f4", "stats"), ("f2", "search")):
            await pilot.press(key)
            await settle(pilot)
            shown = footer_fits(app, width)
            assert app.current_mode == mode and mode.title() not in [s.title() for s in shown], \
                "the mode on screen has no key"
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        await settle(pilot)
        assert {"Back", "Next", "Find"} <= set(footer_fits(app, width))
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))
        await settle(pilot)
        assert {"Close", "Zoom"} <= set(footer_fits(app, width))


async def test_import_app_loads_textual_image_first_and_leaves_the_collector_running() -> None:
    """The CLI's import of the UI: textual-image loaded (it probes the terminal at import),
    the imported objects frozen out of collection, and the collector running again after.
    The store's engines (mongita, mongomock, and pymongo under both) wait for the store to open,
    so a kept first page is drawn without them."""
    code = ("import gc, sys; from medpix_tui.cli.tui import import_app; app = import_app(); "
            "print(app.__name__, 'textual_image.renderable' in sys.modules, gc.isenabled(),"
            " gc.get_freeze_count() > 10000,"
            " *(m in sys.modules for m in ('mongita', 'mongomock', 'pymongo')))")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert out.decode().split() == ["MedpixApp", "True", "True", "True", "False", "False", "False"]


async def test_sql_refuses_writes_and_the_session_goes_on(real_bundle: Bundle) -> None:
    """``DROP VIEW images`` once ran in the SQL screen, and every query on images failed after it."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        status = screen.query_one("#sql-status", Static)
        for statement in ("DROP VIEW images", "CREATE MACRO m(x) AS x", "CHECKPOINT",
                          "CREATE TABLE t AS SELECT * FROM images"):
            screen.query_one("#editor", TextArea).load_text(statement)
            await pilot.press("f5")
            await settle(pilot)
            assert str(status.render()).startswith("SQL is read-only"), statement
        screen.query_one("#editor", TextArea).load_text("SELECT count(*) AS n FROM images")
        await pilot.press("f5")
        await settle(pilot)
        table = screen.query_one("#sql-results", DataTable)
        assert table.row_count == 1 and str(table.get_row_at(0)[0]) == str(real_bundle.store.count(IMAGES))


async def test_sql_status_line_tells_the_export_limit(real_bundle: Bundle) -> None:
    """Over the export's row limit the line said "export saves all", and the export then refused."""
    from medpix_tui.sql import MAX_RESULT_ROWS
    from medpix_tui.tui.screens.sql import MAX_ROWS

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        status = screen.query_one("#sql-status", Static)
        table = screen.query_one("#sql-results", DataTable)
        for rows, said in ((MAX_RESULT_ROWS + 1, f"more than {MAX_RESULT_ROWS} rows · 1 column"),
                           (MAX_RESULT_ROWS,
                            f"{MAX_RESULT_ROWS} rows · 1 column ({MAX_ROWS} shown; export runs it again for all)"),
                           (MAX_ROWS, f"{MAX_ROWS} rows · 1 column")):
            screen.query_one("#editor", TextArea).load_text(f"SELECT * FROM range({rows})")
            await pilot.press("f5")
            await settle(pilot)
            line = str(status.render())
            assert line.startswith(said) and table.row_count == MAX_ROWS, line
            assert ("export runs it again for all" in line) == (MAX_ROWS < rows <= MAX_RESULT_ROWS), line
            assert ("too many to export" in line) == (rows > MAX_RESULT_ROWS), line


async def test_sql_says_a_query_is_running_not_the_last_ones_time(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        status, timing = screen.query_one("#sql-status", Static), screen.query_one("#sql-time", Static)
        table = screen.query_one("#sql-results", DataTable)
        await pilot.press("f5")  # the default query
        await settle(pilot)
        assert str(timing.render()).endswith(" ms") and not table.has_class("-stale")
        screen.query_one("#editor", TextArea).load_text("SELECT count(*) FROM range(1000000000000)")
        await pilot.press("f5")
        await wait_for(pilot, lambda: screen._con.running)
        assert str(status.render()).startswith("Running")
        assert str(timing.render()) == "running" and table.has_class("-stale"), "the last rows are marked as old"
        await pilot.press("escape")
        await wait_for(pilot, lambda: "cancelled" in str(status.render()))
        assert str(timing.render()) == "" and not table.has_class("-stale") and table.row_count == 0


async def test_sql_saves_the_rows_it_shows_and_nothing_while_a_query_runs(real_bundle: Bundle,
                                                                          tmp_path: Path) -> None:
    # a save ran the statement again: ORDER BY random() saved other rows than the screen's, and a
    # save during a run waited, then saved the previous statement's answer
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        screen.query_one("#editor", TextArea).load_text("SELECT image FROM images ORDER BY random() LIMIT 5")
        await pilot.press("f5")
        await settle(pilot)
        table = screen.query_one("#sql-results", DataTable)
        shown = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-path", Input).value = "sample.json"
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "sample.json").exists())
        assert [row["image"] for row in json.loads((tmp_path / "sample.json").read_text())] == shown
        screen.query_one("#editor", TextArea).load_text("SELECT count(*) FROM range(1000000000000)")
        await pilot.press("f5")
        await wait_for(pilot, lambda: screen._con.running)
        app.clear_notifications()
        await pilot.press("ctrl+s")  # (settle would wait for the query's worker too)
        await wait_for(pilot, lambda: any(n.message.startswith("A query is running") for n in app._notifications))
        assert not isinstance(app.screen, SaveDialog) and screen._con.running
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen._con.running)


async def test_sql_a_new_query_replaces_a_running_one(real_bundle: Bundle) -> None:
    # F5 during a run queued the new statement behind the old, its time counting the wait
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        editor, status = screen.query_one("#editor", TextArea), screen.query_one("#sql-status", Static)
        editor.load_text("SELECT count(*) FROM range(1000000000000)")
        await pilot.press("f5")
        await wait_for(pilot, lambda: screen._con.running)
        editor.load_text("SELECT 7 AS second")
        await pilot.press("f5")
        await wait_for(pilot, lambda: str(status.render()).startswith("1 row"))
        table = screen.query_one("#sql-results", DataTable)
        assert [str(c.label) for c in table.columns.values()] == ["second"] and not screen._con.running
        timing = str(screen.query_one("#sql-time", Static).render())
        assert timing.endswith(" ms") and int(timing.split()[0]) < 5000, timing


async def test_sql_run_on_a_blank_editor_says_nothing_to_run(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        for text, key in (("   ", "f5"), ("  \n\t \n", "ctrl+j")):
            app.clear_notifications()
            screen.query_one("#editor", TextArea).load_text(text)
            await pilot.press(key)
            await settle(pilot)
            assert str(screen.query_one("#sql-status", Static).render()).startswith("Nothing to run")
            assert any("Nothing to run" in n.message for n in app._notifications)


async def test_sql_editor_keys_are_the_ones_its_help_names(real_bundle: Bundle) -> None:
    """Tab indents in the editor (SQL is indented); Esc leaves it and ctrl+e comes back, as help says."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        editor = screen.query_one("#editor", TextArea)
        editor.load_text("SELECT 1")
        editor.move_cursor((0, 0))
        await pilot.press("tab")
        assert editor.text.startswith("    SELECT") and editor.has_focus
        await pilot.press("escape")
        await wait_for(pilot, lambda: not editor.has_focus)
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: editor.has_focus)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.query_one("Markdown").source
        assert "`tab` indents" in text and "`esc` leaves it" in text


async def test_sql_sidebar_hides_below_100_columns_until_asked(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        sidebar = screen.query_one("#sql-sidebar")
        assert not sidebar.display
        await pilot.resize_terminal(120, 24)
        await wait_for(pilot, lambda: sidebar.display)
        await pilot.resize_terminal(90, 24)
        await wait_for(pilot, lambda: not sidebar.display)
        await pilot.press("ctrl+b")  # asked for: it stays at any width
        assert sidebar.display
        await pilot.resize_terminal(85, 24)
        await settle(pilot)
        assert sidebar.display


async def test_footer_keys_come_back_when_the_terminal_widens(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=(160, 24)) as pilot:
        await settle(pilot)
        wide = footer_fits(app, 160)
        await pilot.resize_terminal(70, 24)
        await wait_for(pilot, lambda: app.screen.size.width == 70)
        await settle(pilot)
        narrow = footer_fits(app, 70)
        assert len(narrow) < len(wide), "some keys cut to fit"
        await pilot.resize_terminal(160, 24)
        await wait_for(pilot, lambda: app.screen.size.width == 160)
        await settle(pilot)
        assert footer_fits(app, 160) == wide


@pytest.mark.parametrize("opener", ["f1", "ctrl+s"])
async def test_a_dialog_closes_on_a_mode_switch(real_bundle: Bundle, tmp_path: Path, opener: str) -> None:
    """F1 (or a save dialog), then F3, then F2: the dialog was still open, behind, on the search screen."""
    from textual.screen import ModalScreen

    from medpix_tui.tui.screens.search import SearchScreen

    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(opener)
        await wait_for(pilot, lambda: isinstance(app.screen, (HelpScreen, SaveDialog)))
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, SqlScreen))
        await settle(pilot)
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.current_mode == "search")
        await settle(pilot)
        assert isinstance(app.screen, SearchScreen), app.screen
        assert not any(isinstance(s, ModalScreen) for s in app.screen_stack)
        assert list(tmp_path.iterdir()) == [], "a dismissed save dialog saves nothing"
        await pilot.press("ctrl+s")  # and the next save asks again
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))


async def test_sql_explain_shows_the_plan_line_by_line_and_enter_reads_a_cell_whole(real_bundle: Bundle) -> None:
    """EXPLAIN's plan was one cell cut to 60 characters, and no long value could be read whole."""
    from medpix_tui.tui.screens.dialogs import ValueDialog

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "f3", SqlScreen)
        editor, table = screen.query_one("#editor", TextArea), screen.query_one("#sql-results", DataTable)
        editor.load_text("EXPLAIN SELECT modality, count(*) FROM images GROUP BY 1")
        await pilot.press("f5")
        await wait_for(pilot, lambda: table.row_count > 5)
        lines = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert [str(c.label) for c in table.columns.values()] == ["physical_plan"]
        assert any("Seq Scan" in line for line in lines) and any("Table: " in line for line in lines), lines
        caption = max((i["Description"]["Caption"] for i in real_bundle.store.find(IMAGES, {})), key=len)
        editor.load_text("SELECT 'x' AS a, caption FROM images ORDER BY length(caption) DESC LIMIT 1")
        await pilot.press("f5")
        await wait_for(pilot, lambda: table.row_count == 1 and len(table.columns) == 2)
        assert len(str(table.get_row_at(0)[1])) < len(caption)  # the cell is cut
        table.focus()
        table.move_cursor(row=0, column=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ValueDialog))
        assert app.screen.query_one(TextArea).text == caption
        await pilot.press("q")  # read-only: q closes rather than types
        await wait_for(pilot, lambda: app.screen is screen)
        assert editor.text.startswith("SELECT 'x'")

"""Snapshots of the four main screens at 100x32, images drawn with half-blocks.

Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs under ``tests/__snapshots__/`` before committing them.
"""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Input, Static
from tui_support import SIZE, make_app, settle, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.screens.sql import SqlScreen
from medpix_tui.tui.screens.stats import StatsScreen
from medpix_tui.tui.widgets.image_view import ImageView
from medpix_tui.tui.widgets.results import ResultsTable


async def search_glioma(pilot: Pilot) -> None:
    await settle(pilot)
    pilot.app.screen.query_one("#keywords", Input).value = "glioma"
    await settle(pilot, 0.05)
    pilot.app.screen.query_one(ResultsTable).focus()
    await settle(pilot)


def test_search_screen(real_bundle: Bundle, snap_compare) -> None:
    assert snap_compare(make_app(real_bundle), terminal_size=SIZE, run_before=search_glioma)


def test_case_screen(real_bundle: Bundle, snap_compare) -> None:
    async def open_case(pilot: Pilot) -> None:
        await search_glioma(pilot)
        await pilot.press("enter")
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        view = app.screen.query_one(ImageView)
        await wait_for(pilot, lambda: not view.has_class("-empty"))
        await settle(pilot)

    assert snap_compare(make_app(real_bundle), terminal_size=SIZE, run_before=open_case)


def test_sql_screen(real_bundle: Bundle, snap_compare) -> None:
    async def run_default_query(pilot: Pilot) -> None:
        app = pilot.app
        await settle(pilot)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, SqlScreen))
        await settle(pilot)
        await pilot.press("ctrl+j")
        await settle(pilot)
        app.screen.query_one("#sql-time", Static).update("")  # a timing would differ on every run
        app.screen.query_one("#sql-results").focus()
        await settle(pilot)

    assert snap_compare(make_app(real_bundle), terminal_size=SIZE, run_before=run_default_query)


def test_stats_screen(real_bundle: Bundle, snap_compare) -> None:
    async def open_stats(pilot: Pilot) -> None:
        app = pilot.app
        await settle(pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, StatsScreen))
        await settle(pilot)

    assert snap_compare(make_app(real_bundle), terminal_size=SIZE, run_before=open_stats)

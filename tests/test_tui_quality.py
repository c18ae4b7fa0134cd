"""Pilot tests of the quality report screen (F5): computed in a thread, filled in, Enter opens a case."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import DataTable, Static, TabbedContent
from tui_support import SIZE, make_app, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.screens.quality import QualityScreen
from medpix_tui.tui.screens.search import SearchScreen

pytestmark = pytest.mark.asyncio


async def test_the_report_fills_the_screen_and_a_leakage_pair_opens_its_case(
        real_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import medpix_tui.quality as quality_module

    # The report's image decoding waits at a gate until the search has answered, so the test shows
    # that the search does not wait for the report, whatever the host's speed.
    gate, decode = threading.Event(), quality_module.pictures

    def gated(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(300)
        return decode(*args, **kwargs)

    monkeypatch.setattr(quality_module, "pictures", gated)
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, QualityScreen))
        quality = app.screen
        assert (quality.report is None
                and str(quality.query_one("#quality-summary", Static).render()).startswith("Working"))
        assert quality.query_one("#quality-loading").display and not quality.query_one(TabbedContent).display

        # the event loop and the store stay free while the report works: a search answers meanwhile
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        await type_text(pilot, "glioma")
        await wait_for(pilot, lambda: app.result is not None and app.result.keywords == "glioma")
        assert quality.report is None, "the search waited for the report"
        gate.set()

        await pilot.press("f5")
        await wait_for(pilot, lambda: quality.report is not None, timeout=180)
        await settle(pilot)
        report = quality.report
        assert str(quality.query_one("#quality-summary", Static).render()).startswith(
            f"{report['bundle']['images']} images")
        pairs = report["leakage"]["pairs"]
        table = quality.query_one("#table-leakage", DataTable)
        assert pairs and table.row_count == len(pairs) and app.focused is table
        assert str(quality.query_one(TabbedContent).get_tab("tab-leakage").label) == f"Leakage ({len(pairs)})"
        conflicts = quality.query_one("#table-conflicts", DataTable)
        assert conflicts.row_count == sum(report["conflict_counts"].values())
        vocabulary = quality.query_one("#table-vocabulary", DataTable)
        assert vocabulary.row_count == sum(len(rows) for rows in report["vocabulary"].values())

        await pilot.press("down", "enter")  # the second pair
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        case = app.screen
        assert case.names == [pairs[1]["a"], pairs[1]["b"]]
        assert case.image["image"] == pairs[1]["a"] and case.case["U_id"] == pairs[1]["a"].split("_")[0]
        await pilot.press("n")  # the pair's other image
        await wait_for(pilot, lambda: case.image is not None and case.image["image"] == pairs[1]["b"])
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is quality)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        await pilot.press("f5")  # the mode keeps its report
        await wait_for(pilot, lambda: app.screen is quality)
        assert quality.report is report


async def test_quitting_while_the_report_works_stops_its_hashing(real_bundle: Bundle,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ctrl+q while the report worked left a blank screen some 8 s: its thread hashed every image first."""
    import medpix_tui.quality as quality_module

    hashed: list[threading.Thread] = []
    started, picture = threading.Event(), quality_module._picture

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        hashed.append(threading.current_thread())
        started.set()
        return picture(*args, **kwargs)

    monkeypatch.setattr(quality_module, "_picture", counted)
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: started.is_set())
        await pilot.press("ctrl+q")
    for thread in set(hashed):  # the report's hashing threads end, whatever the host's speed
        thread.join(300)
    total = real_bundle.store.count("Image_Descriptions")
    assert len(hashed) < total / 2, f"{len(hashed)} of {total} images hashed after the quit"
